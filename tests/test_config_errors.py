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
                       "'seeds'? (allowed: models, modes, lr, seeds, save_model, exits, epochs, batch_size, max_length, scheduler, "
                       "weight_decay, warmup_ratio, max_grad_norm, group_by_length, reduction_factor)")


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


# --------------------------------------------------------------------------- a student against its teacher

TINY = yaml.safe_load((REPO / "tests" / "workflow_tiny.yaml").read_text())  # teacher: H 32, 2 layers, 2 heads, FFN 64


def student_error(student=None, loss=None) -> str:
    config = copy.deepcopy(TINY)
    entry = config["students"]["student-a"]
    entry["student"] = {"num_recursions": 2, **(student or {})}
    entry["loss"] = loss or {}
    with pytest.raises(ConfigError) as e:
        load_plan(config, SCHEMA)
    return str(e.value).removeprefix("invalid config (nothing was run):\n  ")


@pytest.mark.parametrize("student, loss, expected", [
    ({"init_from_teacher": "average", "embedding_size": 64}, None,
     "config key students.student-a.student.embedding_size: init_from_teacher copies the teacher's embeddings, so E "
     "must be the teacher's H (32); got 64 (leave it null)"),
    ({"init_from_teacher": "stepwise", "intermediate_size": 128}, None,
     "config key students.student-a.student.init_from_teacher: needs the student's layer shape to equal the "
     "teacher's; differs in intermediate_size (student 128, teacher 64)"),
    ({"relaxation": {"lora_rank": 4}, "hidden_size": 16}, None,
     "config key students.student-a.student.relaxation.lora_init: svd: needs the student's layer shape to equal the "
     "teacher's; differs in hidden_size (student 16, teacher 32)"),
    ({"relaxation": {"lora_rank": 64, "lora_init": "zeros"}}, None,
     "config key students.student-a.student.relaxation.lora_rank: expected at most the student's hidden_size (32), "
     "got 64"),
    (None, {"layer_map": [0, 2]},
     "config key students.student-a.loss.layer_map: layer map [0, 2]: entry 2 is not a teacher layer index in 0..1"),
    (None, {"weights": {"relation": 1.0}, "relation": {"heads": 3}},
     "config key students.student-a.loss.relation.heads: 3 relation heads must divide both the teacher's width (32) "
     "and the student's (32)"),
])
def test_a_student_that_cannot_fit_its_teacher_fails_when_the_plan_is_built(student, loss, expected):
    assert student_error(student, loss) == expected


def test_the_distill_job_refuses_the_same_student_with_the_same_message():
    from types import SimpleNamespace

    from minialbert.student import student_model_config

    teacher = SimpleNamespace(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              hidden_act="gelu", vocab_size=100, max_position_embeddings=64)
    spec = StudentConfig.from_dict({"num_recursions": 2, "init_from_teacher": "average", "embedding_size": 64})
    with pytest.raises(ConfigError) as e:
        student_model_config(spec, teacher)
    assert f"config key students.student-a.{e.value}" == student_error(spec.to_dict())


def test_a_local_teachers_config_json_is_checked_too(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 4, '
                                          '"intermediate_size": 96, "model_type": "bert"}')
    config = copy.deepcopy(TINY)
    config["teachers"]["local"] = {"source": "local", "path": str(tmp_path)}
    config["students"]["student-a"].update(teacher="local", loss={"layer_map": [0, 4]})
    with pytest.raises(ConfigError, match=r"students.student-a.loss.layer_map: layer map \[0, 4\]: entry 4 is not a "
                                          r"teacher layer index in 0..3"):
        load_plan(config, SCHEMA)


def test_a_misspelt_name_gets_a_hint():
    message = error(lambda c: c["students"]["minialbert-adapter"].update(teacher="teachr"))
    assert "config key students.minialbert-adapter.teacher: 'teachr' is not a teachers entry, did you mean " \
           "'teacher'?" in message
    message = error(lambda c: c["finetune"].update(models=["minialbert-adaptor"]))
    assert "config key finetune.models[0]: 'minialbert-adaptor' is not a teachers, students or baselines entry, " \
           "did you mean 'minialbert-adapter'?" in message


def test_snakemake_dry_run_refuses_a_student_that_cannot_fit_its_teacher(tmp_path):
    """The same check through `snakemake -n` on the demo config: the error, and nothing planned."""
    import subprocess
    import sys

    config = copy.deepcopy(DEMO)
    config["students"]["minialbert-adapter"]["student"]["init_from_teacher"] = "average"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run([str(snakemake), "-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml")], capture_output=True, text=True,
                         timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode != 0 and "Job stats" not in log
    assert ("config key students.minialbert-adapter.student.embedding_size: init_from_teacher copies the teacher's "
            "embeddings, so E must be the teacher's H (128); got 64 (leave it null)") in log
