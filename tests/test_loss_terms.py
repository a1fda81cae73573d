"""The loss-term table: a term declared from outside the package trains, and everything else
(config keys and defaults, the teacher's need, the loss-curve panels) is derived from the table."""

from __future__ import annotations

import json

import pytest
import yaml

from minialbert.command_configs import LossConfig
from minialbert.loss_terms import (
    LOSS_TERMS,
    LossTerm,
    default_weights,
    needs_teacher,
    register_loss_term,
    teacher_free_weights,
    unregister_loss_term,
)
from minialbert.utils import ConfigError

from distill_world import distill_config, make_world, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def last_hidden_mse(x):
    """A toy term: the mean squared difference of the last student and teacher hidden states."""
    return (x.student["hidden_states"][-1] - x.teacher["hidden_states"][-1]).float().pow(2).mean()


@pytest.fixture
def toy_term():
    term = register_loss_term(LossTerm("last_hidden_mse", last_hidden_mse, 0.0, "toy: last hidden-state MSE",
                                       teacher=("hidden_states",), student=("hidden_states",)))
    yield term
    unregister_loss_term(term.name)
    assert "last_hidden_mse" not in LOSS_TERMS


def test_the_paper_objective_is_the_table():
    assert default_weights() == {"mlm": 1.0, "attention": 3.0, "hidden": 3.0, "output": 5.0, "embedding": 0.0,
                                 "relation": 0.0, "exit_output": 0.0}
    assert teacher_free_weights() == {"mlm": 1.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "embedding": 0.0,
                                      "relation": 0.0, "exit_output": 0.0}
    assert not needs_teacher(teacher_free_weights()) and needs_teacher(default_weights())
    assert LossConfig.from_dict(None).weights.to_dict() == default_weights()


def test_a_term_must_name_outputs_that_exist():
    with pytest.raises(ValueError, match="unknown outputs"):
        LossTerm("bad", last_hidden_mse, teacher=("logits", "values"))


def test_a_term_registered_from_outside_trains_through_the_distill_command(toy_term, tmp_path):
    from minialbert.distill import load_config, train_model
    from minialbert.plots import loss_panels, read_train_log

    # the config accepts the new key, and its help lists it with its default
    assert LossConfig.from_dict({"weights": {"last_hidden_mse": 2}}, key="loss").weights.last_hidden_mse == 2.0
    assert "last_hidden_mse: 0.0  # toy: last hidden-state MSE" in LossConfig.describe()
    with pytest.raises(ConfigError, match="loss.weights.last_hidden: unknown key"):
        LossConfig.from_dict({"weights": {"last_hidden": 2}}, key="loss")

    # only MLM and the toy term weighted: the teacher runs because the toy term reads it
    world = make_world(tmp_path / "world")
    path = distill_config(world, tmp_path / "c.yaml", max_steps=2, log_interval=1, checkpoint_interval=10)
    raw = yaml.safe_load(path.read_text())
    raw["loss"]["weights"] = {"mlm": 1, "attention": 0, "hidden": 0, "output": 0, "embedding": 0,
                              "last_hidden_mse": 0.5}
    path.write_text(yaml.safe_dump(raw))
    metrics = train_model(load_config("distill", path), tmp_path / "out")

    log = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for record in log:  # the new term is logged and weighted into the total
        assert record["last_hidden_mse"] > 0
        assert record["total"] == pytest.approx(record["mlm"] + 0.5 * record["last_hidden_mse"], rel=1e-5)
    assert log[1]["last_hidden_mse"] != log[0]["last_hidden_mse"]  # the student was updated
    assert metrics["last_hidden_mse"] == pytest.approx(log[-1]["last_hidden_mse"])
    assert metrics["config"]["loss"]["weights"]["last_hidden_mse"] == 0.5

    # the loss curves get a panel for it, in the table's order
    assert loss_panels([read_train_log(tmp_path / "out" / "train_log.jsonl")]) == [
        "mlm", "attention", "hidden", "output", "embedding", "last_hidden_mse", "total"]
