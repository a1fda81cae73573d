"""The workflow plan as library code: a config in, models, runs and job configs out, without
Snakemake (rules/common.smk only looks things up in it)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minialbert.utils import ConfigError
from minialbert.workflow.plan import Plan, load_plan, lr_label, run_dir

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schemas" / "config.schema.yaml"
TINY = yaml.safe_load((REPO / "tests" / "workflow_tiny.yaml").read_text())


def plan(config=None, **edits) -> Plan:
    return load_plan(copy.deepcopy(config or TINY), SCHEMA)


def test_registry_names_kinds_and_one_path_pattern():
    p = plan()
    kinds = {n: m.kind for n, m in p.models.items()}
    assert kinds == {"teacher": "teacher", "scratch": "baseline", "student-a": "student", "student-b": "student"}
    for m in p.models.values():
        assert m.dir == f"results/{m.kind}s/{m.name}/model" and m.inputs == [f"results/{m.kind}s/{m.name}"]
    assert p.names("teacher", "pretrain") == ["teacher"] and p.names("baseline", "scratch") == ["scratch"]


def test_hub_and_authors_models_live_at_the_same_pattern_local_ones_in_place(tmp_path):
    config = copy.deepcopy(TINY)
    local = tmp_path / "bert"
    local.mkdir()
    config["baselines"].update({"hub-bert": {"source": "hub", "name": "prajjwal1/bert-tiny"},
                                "authors": {"source": "authors", "name": "nlpie/miniALBERT-128"},
                                "mine": {"source": "local", "path": str(local)}})
    p = plan(config)
    assert p.models["hub-bert"].dir == "results/baselines/hub-bert/model"
    assert p.models["authors"].dir == "results/baselines/authors/model"
    assert p.models["mine"].dir == str(local) and p.models["mine"].inputs == []


def test_runs_enumerate_model_task_mode_lr_seed():
    p = plan()
    keys = list(p.runs)
    assert keys[0][0] == "teacher" and len(keys) == len(set(keys))
    assert {k[2] for k in keys if k[0] == "teacher"} == {"full"}  # the teacher's modes: [full]
    run = p.runs[keys[0]]
    assert set(run) >= {"lr", "seed", "mode", "epochs", "batch_size", "max_length", "warmup_ratio"}
    assert p.run_metrics()[0] == f"{run_dir(*keys[0])}/metrics.json"
    assert lr_label(5e-5) == "5e-05" and lr_label(1e-3) == "0.001"


def test_longest_runs_are_scheduled_first():
    """Priorities order runs by passes per example (epochs x 16 / batch), below the training rules."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    p = plan(config)
    priority = {(k[0], k[1], k[2]): p.finetune_priority(*k) for k in p.runs}
    assert priority["minialbert-adapter", "stsb", "adapter"] == 40  # 20 epochs in batches of 8
    assert priority["minialbert-adapter", "mrpc", "adapter"] == 10 and priority["teacher", "stsb", "full"] == 6
    assert priority["teacher", "sst2", "full"] == 2
    assert all(1 <= v <= 49 for v in priority.values())
    with pytest.raises(ConfigError, match="no fine-tuning run"):
        p.finetune_priority("teacher", "stsb", "full", "0.5", "0")


def test_epochs_factor_multiplies_only_that_models_epochs():
    config = copy.deepcopy(TINY)
    config["baselines"]["scratch"]["finetune_epochs_factor"] = 2
    p = plan(config)
    scratch = [r for k, r in p.runs.items() if k[0] == "scratch"]
    teacher = [r for k, r in p.runs.items() if k[0] == "teacher"]
    assert scratch[0]["epochs"] == 2 * teacher[0]["epochs"]


def test_a_student_identity_follows_its_config_and_its_teacher():
    base = plan()
    config = copy.deepcopy(TINY)
    config["students"]["student-a"]["training"]["lr"] = 5e-4
    edited = plan(config)
    assert edited.models["student-a"].identity != base.models["student-a"].identity
    assert edited.models["student-b"].identity == base.models["student-b"].identity
    config = copy.deepcopy(TINY)
    config["teachers"]["teacher"]["training"]["max_steps"] = 5
    retrained = plan(config)
    assert all(retrained.models[s].identity != base.models[s].identity for s in ("teacher", "student-a", "student-b"))
    assert retrained.models["scratch"].identity == base.models["scratch"].identity  # untrained: shape only


def test_a_student_that_reads_no_teacher_needs_only_its_architecture():
    """An MLM-only student is built against the teacher's architecture saved untrained, so its
    distillation does not wait for the pretraining, and retraining the teacher does not rerun it."""
    config = copy.deepcopy(TINY)
    config["students"]["student-b"]["loss"] = {"weights": {"mlm": 1, "attention": 0, "hidden": 0, "output": 0,
                                                           "embedding": 0}}
    p = plan(config)
    assert p.architecture_only("student-b") and not p.architecture_only("student-a")
    assert p.distill_inputs("student-b")[0] == "results/architectures/teacher"
    assert "results/teachers/teacher" not in p.distill_inputs("student-b")
    assert p.distill_job("student-b")["command"]["teacher"] == "results/architectures/teacher/model"
    assert p.distill_job("student-a")["command"]["teacher"] == "results/teachers/teacher/model"
    job = p.architecture_job("teacher")
    assert job["command"]["model"] == TINY["teachers"]["teacher"]["model"]
    assert p.architecture_inputs("teacher") == p.scratch_inputs("scratch")  # the teacher's tokenizer

    config["teachers"]["teacher"]["training"]["lr"] = 7e-4  # the teacher retrained
    retrained = plan(config)
    assert retrained.models["student-b"].identity == p.models["student-b"].identity
    assert retrained.models["student-a"].identity != p.models["student-a"].identity
    config["teachers"]["teacher"]["model"]["hidden_size"] *= 2  # another architecture
    assert plan(config).models["student-b"].identity != p.models["student-b"].identity

    for copies in ({"init_from_teacher": "stepwise", "embedding_size": None, "num_recursions": 2},
                   {"embeddings_from": "teacher", "embedding_size": None}):  # the teacher's weights are read
        config = copy.deepcopy(TINY)
        config["students"]["student-b"]["loss"] = {"weights": {"attention": 0, "hidden": 0, "output": 0}}
        config["students"]["student-b"]["student"].update(copies)
        assert not plan(config).architecture_only("student-b"), copies


def test_labels_do_not_change_identities():
    config = copy.deepcopy(TINY)
    config["students"]["student-a"]["label"] = "A new label"
    assert plan(config).models["student-a"].identity == plan().models["student-a"].identity


def test_job_configs_carry_the_model_name_and_upstream_identities():
    p = plan()
    key = next(k for k in p.runs if k[0] == "student-a")
    job = p.finetune_job(*key)["command"]
    assert job["model_name"] == "student-a" and job["model"] == "results/students/student-a/model"
    assert job["provenance"]["model_identity"] == p.models["student-a"].identity
    distill = p.distill_job("student-a")
    assert distill["command"]["teacher"] == "results/teachers/teacher/model"
    assert distill["command"]["training"]["checkpoint_dir"].endswith(p.models["student-a"].identity)
    windows = p.windows_job("w64")
    assert windows["max_windows_per_document"] == 2 and windows["num_proc"] == 1  # resolved defaults
    assert p.tokenizer_job("wordpiece")["lowercase"] is True
    with pytest.raises(ConfigError, match="no fine-tuning run"):
        p.finetune_job("student-a", "sst2", "full", "9", "0")


@pytest.mark.parametrize("section, key, value, message", [
    ("students", ("student-a", "student", "num_recursion"), 3,
     "config key students.student-a.student.num_recursion: unknown key, did you mean 'num_recursions'? (allowed: "
     "num_recursions,"),
    ("students", ("student-a", "training", "max_steps"), 0,
     "config key students.student-a.training.max_steps: expected an integer >= 1, got 0"),
    ("teachers", ("teacher", "model", "num_attention_heads"), 3,
     "config key teachers.teacher.model.num_attention_heads: must divide"),
    ("windows", ("w64", "strid"), 3, "config key windows.w64.strid: unknown key, did you mean 'stride'? (allowed: "
     "corpus, tokenizer, max_length"),
    ("finetune", ("batch_size",), 0, "config key finetune.batch_size: expected an integer >= 1, got 0"),
    ("students", ("student-a", "training", "lr"), "1e-3", "config key students.student-a.training.lr: expected a "
     "number, got '1e-3' (a string: YAML 1.1 reads 1e-3 as text; write 1.0e-3)"),
])
def test_command_sections_are_validated_by_their_dataclass(section, key, value, message):
    config = copy.deepcopy(TINY)
    target = config[section]
    for k in key[:-1]:
        target = target.setdefault(k, {})
    target[key[-1]] = value
    with pytest.raises(ConfigError) as e:
        plan(config)
    assert message in str(e.value)


def test_old_keys_are_refused_naming_the_new_one():
    config = copy.deepcopy(TINY)
    config["finetune"]["warmup"] = 0.1
    with pytest.raises(ConfigError, match=r"finetune.warmup: this key was renamed: use warmup_ratio"):
        plan(config)
    config = copy.deepcopy(TINY)
    config["report"]["efficiency"]["seq_len"] = 64
    with pytest.raises(ConfigError, match=r"report.efficiency.seq_len: this key was renamed: use max_length"):
        plan(config)


def test_problems_are_reported_together():
    config = copy.deepcopy(TINY)
    config["students"]["student-a"]["teacher"] = "nobody"
    config["finetune"]["models"] = ["ghost"]
    with pytest.raises(ConfigError) as e:
        plan(config)
    assert "students.student-a.teacher" in str(e.value) and "finetune.models[0]" in str(e.value)


def test_the_plan_imports_neither_torch_nor_snakemake():
    code = ("import sys, minialbert.workflow.plan; "
            "print(json.dumps([m for m in ('torch', 'transformers', 'snakemake') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_task_and_corpus_specs_are_checked_by_their_commands_validators():
    config = copy.deepcopy(TINY)
    config["tasks"]["sst2"]["spec"]["glue_task"] = "sst3"
    with pytest.raises(ConfigError) as e:
        plan(config)
    assert "config key tasks.sst2.spec: field 'glue_task' is 'sst3'" in str(e.value)


def test_any_finetune_setting_can_be_given_per_mode():
    config = copy.deepcopy(TINY)
    config["tasks"]["sst2"]["finetune"] = {"epochs": {"adapter": 7}, "scheduler": {"adapter": "constant"},
                                           "lr": {"adapter": [5e-3]}}
    p = plan(config)
    runs = {k: r for k, r in p.runs.items() if k[1] == "sst2"}
    adapter = [r for k, r in runs.items() if k[2] == "adapter"]
    full = [r for k, r in runs.items() if k[2] == "full"]
    assert adapter and all(r["epochs"] == 7 and r["scheduler"] == "constant" and r["lr"] == 5e-3 for r in adapter)
    default = plan().runs
    assert full and all(r == default[k] for k, r in runs.items() if k[2] == "full")  # full mode: the defaults
    config["tasks"]["sst2"]["finetune"]["epochs"] = {"adapter": 0.0, "full": -1}
    with pytest.raises(ConfigError, match=r"tasks.sst2.finetune \(full mode\).epochs: expected a number >= 0"):
        plan(config)


def test_the_student_zoo_reuses_the_demo_upstream_and_shared_students():
    """configs/student-zoo.yaml copies the demo's world, teacher, tasks and fine-tuning grid:
    every shared step has the demo's identity, so the zoo reruns none of them."""
    demo = load_plan(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA)
    zoo = load_plan(yaml.safe_load((REPO / "configs" / "student-zoo.yaml").read_text()), SCHEMA)
    for name in ("teacher", "minialbert-adapter", "no-distillation"):
        assert zoo.models[name].identity == demo.models[name].identity, name
    for task in demo.config["tasks"]:
        assert zoo.task_identity(task) == demo.task_identity(task)
    shared = [key for key in zoo.runs if key[0] in ("teacher", "minialbert-adapter", "no-distillation")]
    assert shared and all(zoo.finetune_job(*key) == demo.finetune_job(*key) for key in shared)
    designs = {"minialbert", "teacher-average", "teacher-relaxed", "cycle-2", "relation"}
    assert designs <= set(zoo.models) and not designs & set(demo.models)
    assert zoo.summary_dir == "results/summary/student-zoo" and demo.summary_dir == "results/summary"
    assert {m for m, *_ in zoo.runs} == designs | {"teacher", "minialbert-adapter", "no-distillation"}


def test_save_model_reaches_only_the_runs_that_keep_their_model():
    from minialbert.command_configs import FinetuneConfig

    default = plan()
    assert all("save_model" not in run for run in default.runs.values())  # existing job configs unchanged
    config = copy.deepcopy(TINY)
    config["tasks"]["sst2"]["finetune"] = {"save_model": {"adapter": True}}
    kept = plan(config)
    for key, run in kept.runs.items():
        if key[1] == "sst2" and key[2] == "adapter":
            assert run["save_model"] is True
            command = kept.finetune_job(*key)["command"]
            assert FinetuneConfig.from_dict({**command, "output": "x"}).save_model is True
        else:
            assert run == default.runs[key]
    config["finetune"]["save_model"] = True
    assert all(run.get("save_model") is True for run in plan(config).runs.values())
    config["finetune"]["save_model"] = "yes"
    with pytest.raises(ConfigError, match="finetune.save_model"):
        plan(config)


def test_students_that_differ_only_in_fine_tuning_share_one_distillation():
    """Two student entries with the same distillation (e.g. fine-tuned with other exit settings)
    are one distilled model: one distill job, both names' runs read its dir."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    twin = dict(config["students"]["minialbert-adapter"], label="the same, other fine-tuning",
                finetune_exits={"loss": "distill"})
    config["students"] = {"minialbert-adapter": config["students"]["minialbert-adapter"], "twin": twin,
                          **{k: v for k, v in config["students"].items() if k != "minialbert-adapter"}}
    p = load_plan(config, SCHEMA)
    first, second = p.models["minialbert-adapter"], p.models["twin"]
    assert second.dir == first.dir == "results/students/minialbert-adapter/model"
    assert second.inputs == first.inputs and second.identity == first.identity
    assert p.models["no-distillation"].dir != first.dir  # another distillation keeps its own
    assert {m.inputs[0] for m in p.models.values() if m.kind == "student"} == {
        "results/students/minialbert-adapter", "results/students/no-distillation"}
