"""Config errors a new user meets in the first hour: each reported once, at the key where it is
written, in one style (`<key>: expected ..., got ...`), with a hint where one helps."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from minialbert.command_configs import FinetuneSettings, StudentConfig
from minialbert.utils import ConfigError, shown_value
from minialbert.workflow.plan import load_plan

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schemas" / "config.schema.yaml"
DEMO = yaml.safe_load((REPO / "config.yaml").read_text())


def error(edit) -> str:
    config = copy.deepcopy(DEMO)
    edit(config)
    with pytest.raises(ConfigError) as e:
        load_plan(config, SCHEMA)
    return str(e.value)


def test_a_typo_in_the_top_level_finetune_section_is_reported_once_at_its_key():
    message = error(lambda c: c["finetune"].update(seed=[0]))
    assert message == ("invalid config (nothing was run):\n  config key finetune.seed: unknown key, did you mean "
                       "'seeds'? (allowed: models, modes, lr, seeds, epochs, batch_size, max_length, scheduler, "
                       "weight_decay, warmup_ratio, max_grad_norm, reduction_factor)")


def test_a_typo_in_a_tasks_finetune_section_is_reported_at_that_task():
    message = error(lambda c: c["tasks"]["mrpc"]["finetune"].update(epoch=2))
    assert message.count("\n") == 1 and "config key tasks.mrpc.finetune.epoch: unknown key, did you mean 'epochs'?" \
        in message


@pytest.mark.parametrize("edit, expected", [
    (lambda c: c["finetune"].update(lr=yaml.safe_load("[1e-3]")),
     "config key finetune.lr[0]: expected a number, got '1e-3' (a string: YAML 1.1 reads 1e-3 as text; write 1.0e-3)"),
    (lambda c: c["finetune"].update(lr=yaml.safe_load("1e-3")),
     "config key finetune.lr: expected a list of learning rates, or one list per tuning mode, got '1e-3' "
     "(a string: YAML 1.1 reads 1e-3 as text; write 1.0e-3)"),
    (lambda c: c["finetune"].update(epochs="3"),
     "config key finetune.epochs: expected a number, got '3' (a string: write the number without quotes)"),
    (lambda c: c.update(finetunes={}), "config key finetunes: unknown key, did you mean 'finetune'? (allowed under "
                                       "<top level>: "),
    (lambda c: c["tasks"]["sst2"].update(report_split="tst"),
     "config key tasks.sst2.report_split: expected one of 'dev', 'test', got 'tst', did you mean 'test'?"),
    (lambda c: c["finetune"].update(seeds=[0, "one"]), "config key finetune.seeds[1]: expected an integer, got 'one'"),
    (lambda c: c["tasks"]["sst2"].pop("spec"), "config key tasks.sst2.spec: missing (required under tasks.sst2)"),
])
def test_schema_errors_name_the_key_and_say_what_was_expected(edit, expected):
    assert expected in error(edit)


def test_command_configs_give_the_same_hints():
    with pytest.raises(ConfigError, match=r"^lr: expected a number, got '5e-5' \(a string: YAML 1.1 reads 5e-5 as "
                                          r"text; write 5.0e-5\)$"):
        from minialbert.command_configs import TrainingConfig
        TrainingConfig.from_dict({"lr": "5e-5", "max_steps": 1})
    with pytest.raises(ConfigError, match=r"^student.num_recursion: unknown key, did you mean 'num_recursions'\?"):
        StudentConfig.from_dict({"num_recursion": 2}, key="student")
    with pytest.raises(ConfigError, match=r"^warmup_ratio: expected a number, got '0.1' \(a string"):
        FinetuneSettings.from_dict({"warmup_ratio": "0.1"})


@pytest.mark.parametrize("value, shown", [
    ("1e-3", "'1e-3' (a string: YAML 1.1 reads 1e-3 as text; write 1.0e-3)"),
    ("5E4", "'5E4' (a string: YAML 1.1 reads 5E4 as text; write 5.0e+4)"),
    ("1.0e3", "'1.0e3' (a string: YAML 1.1 reads 1.0e3 as text; write 1.0e+3)"),
    ("2.5e-5", "'2.5e-5' (a string: write the number without quotes)"),
    ("adamw", "'adamw'"),
    (3, "3"),
])
def test_shown_value(value, shown):
    assert shown_value(value) == shown
    if "write 1" in shown or "write 5" in shown:  # the suggestion is what PyYAML reads as a float
        assert isinstance(yaml.safe_load(shown.rsplit("write ", 1)[1].rstrip(")")), float)
