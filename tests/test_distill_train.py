"""`minialbert distill` / `pretrain-teacher` end to end on a tiny offline world: learning, outputs,
config errors, SIGKILL + resume, and two-process DDP under torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from minialbert.utils import ConfigError
from distill_world import distill_config, make_world, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("distill_world"))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _cli(*args):
    return [sys.executable, "-m", "minialbert.cli", *args]


def _run(cmd, timeout):
    """subprocess.run in its own process group, killed whole on timeout (torchrun's workers too)."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout}s: {err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _distill(cfg_path, output):
    """`minialbert distill` in process: the typed config from the file, then the shared runner."""
    from minialbert.distill import load_config, train_model

    return train_model(load_config("distill", cfg_path), output)


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def test_distil_tiny_student_learns_and_writes_outputs(world, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    cfg = distill_config(world, tmp_path / "c.yaml", max_steps=24, log_interval=3, checkpoint_interval=10)
    metrics = _distill(cfg, tmp_path / "out")
    log = [r for r in _log(tmp_path / "out") if "event" not in r]
    assert [r["step"] for r in log] == list(range(3, 25, 3))
    for r in log:  # every weighted component present, finite, and the attention term non-zero
        for k in ("mlm", "attention", "hidden", "output", "embedding", "total"):
            assert math.isfinite(r[k]), (k, r)
        assert r["attention"] > 1e-3
    assert log[-1]["total"] < 0.6 * log[0]["total"]
    for k in ("steps", "tokens_seen", "wall_seconds", "tokens_per_second", "peak_memory_bytes", "config",
              "config_hash", "total", "attention"):
        assert k in metrics
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["steps"] == 24 and saved["resolved"]["layer_map"] == [1, 3]
    assert saved["config"]["loss"]["layer_map"] is None  # the config as given; what it resolved to is beside it
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "model")
    assert type(model).__name__ == "MiniAlbertForMaskedLM" and model.config.num_hidden_layers == 2
    tok = AutoTokenizer.from_pretrained(tmp_path / "out" / "model")
    with torch.no_grad():
        assert model(**tok(["the cat sat"], return_tensors="pt")).logits.shape[-1] == model.config.vocab_size
    assert not (tmp_path / "out" / "checkpoints").exists()  # a completed run removes its checkpoints
    assert not any(p.name.startswith("step-") for p in (tmp_path / "out" / "model").iterdir())
    # the same scalars as TensorBoard event files beside the log
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    assert {"loss/total", "loss/attention", "lr"} <= set(events.Tags()["scalars"])
    total = events.Scalars("loss/total")
    assert [e.step for e in total] == [r["step"] for r in log]
    assert [e.value for e in total] == pytest.approx([r["total"] for r in log], rel=1e-6)


def test_mlm_only_student_is_the_same_against_the_untrained_architecture(world, tmp_path):
    """The workflow builds a student whose loss reads no teacher against its teacher's
    architecture saved untrained (`Plan.architecture_only`), so that it need not wait for the
    pretraining: the student must be bit-identical to the one built against the trained teacher."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from distill_world import make_teacher

    other = make_teacher(tmp_path / "untrained", AutoTokenizer.from_pretrained(world["teacher"]), seed=7)
    trained = load_file(world["teacher"] / "model.safetensors")
    assert any(not torch_equal(w, trained[k]) for k, w in other.state_dict().items() if k in trained)
    weights = {}
    for name, teacher in (("trained", world["teacher"]), ("untrained", tmp_path / "untrained")):
        cfg = yaml.safe_load(distill_config(world, tmp_path / f"{name}.yaml", max_steps=4).read_text())
        cfg["teacher"] = str(teacher)
        cfg["loss"]["weights"] = {"mlm": 1, "attention": 0, "hidden": 0, "output": 0, "embedding": 0}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        metrics = _distill(tmp_path / f"{name}.yaml", tmp_path / name / "out")
        assert set(metrics["loss"]) == {"mlm", "total"}
        weights[name] = load_file(tmp_path / name / "out" / "model" / "model.safetensors")
    assert weights["trained"].keys() == weights["untrained"].keys()
    assert all(torch_equal(w, weights["untrained"][k]) for k, w in weights["trained"].items())


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_baseline_and_other_hidden_size(world, tmp_path):
    from safetensors.torch import load_file

    cfg_path = distill_config(world, tmp_path / "c.yaml", max_steps=2)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["student"]["hidden_size"] = 24
    cfg["student"]["num_attention_heads"] = 3
    cfg_path.write_text(yaml.safe_dump(cfg))
    m = _distill(cfg_path, tmp_path / "small")
    assert m["steps"] == 2 and m["attention"] > 0
    assert not any("projection" in k for k in load_file(tmp_path / "small" / "model" / "model.safetensors"))
    cfg["loss"]["weights"] = {"mlm": 1, "attention": 0, "hidden": 0, "output": 0, "embedding": 0}
    cfg["teacher"] = str(tmp_path / "no-such-teacher-needed")
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="teacher"):  # the teacher still defines vocabulary and tokenizer
        _distill(cfg_path, tmp_path / "base")
    cfg["teacher"] = str(world["teacher"])
    cfg_path.write_text(yaml.safe_dump(cfg))
    m = _distill(cfg_path, tmp_path / "base")
    assert {"mlm", "total"} <= set(m["loss"]) and "attention" not in m["loss"]


def test_student_embeddings_from_another_model(world, tmp_path):
    import torch
    from transformers import AutoModelForMaskedLM

    cfg_path = distill_config(world, tmp_path / "c.yaml", max_steps=1, lr=1e-9, warmup_steps=0)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["student"]["embeddings_from"] = str(world["teacher"])  # a BERT: E becomes its width (32 = H)
    cfg_path.write_text(yaml.safe_dump(cfg))
    _distill(cfg_path, tmp_path / "out")
    student = AutoModelForMaskedLM.from_pretrained(tmp_path / "out" / "model")
    teacher = AutoModelForMaskedLM.from_pretrained(world["teacher"])
    assert student.config.embedding_size == 32 and student.minialbert.projector is None
    torch.testing.assert_close(student.minialbert.embeddings.word_embeddings.weight,
                               teacher.bert.embeddings.word_embeddings.weight, atol=1e-6, rtol=0)


def test_config_errors_name_the_key(world, tmp_path):
    from minialbert.cli import main

    cfg_path = distill_config(world, tmp_path / "c.yaml")
    cfg = yaml.safe_load(cfg_path.read_text())
    for mutate, key in (
        (lambda c: c["student"].update(recursions=3), "student.recursions"),
        (lambda c: c["loss"].update(weights={"attn": 1}), "loss.weights"),
        (lambda c: c["loss"].update(layer_map=[0, 1, 2]), "loss.layer_map: layer map"),
        (lambda c: c["training"].update(batch_size=0), "training.batch_size"),
        (lambda c: c.update(windows=str(tmp_path / "nowhere")), "windows"),
        (lambda c: c.pop("teacher"), "teacher"),
    ):
        bad = json.loads(json.dumps(cfg))
        mutate(bad)
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            _distill(p, tmp_path / "o")
        assert main(["distill", "--config", str(p), "--output", str(tmp_path / "o")]) == 2, key
        assert not (tmp_path / "o").exists()


def test_unknown_student_key_exits_2_naming_the_key_and_the_allowed_keys(world, tmp_path, capsys):
    import dataclasses

    from minialbert.cli import main
    from minialbert.command_configs import StudentConfig

    cfg = yaml.safe_load(distill_config(world, tmp_path / "c.yaml").read_text())
    cfg["student"]["foo"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(bad), "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    allowed = ", ".join(f.name for f in dataclasses.fields(StudentConfig))
    assert "num_recursions" in allowed and "embedding_size" in allowed
    assert f"{bad}: student.foo: unknown key (allowed: {allowed})" in err, err
    assert not (tmp_path / "x").exists()


def test_pretrain_teacher(world, tmp_path):
    from transformers import AutoModelForMaskedLM

    from minialbert.distill import load_config, train_model

    cfg = {"tokenizer": str(world["tokenizer"]), "windows": str(world["windows"]),
           "model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 64},
           "training": {"lr": 5e-3, "batch_size": 8, "max_steps": 12, "log_interval": 4, "seed": 0}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    metrics = train_model(load_config("pretrain-teacher", tmp_path / "t.yaml"), tmp_path / "teacher")
    assert metrics["steps"] == 12 and set(metrics["loss"]) == {"mlm", "total"}
    log = [r for r in _log(tmp_path / "teacher") if "event" not in r]
    assert log[-1]["mlm"] < log[0]["mlm"]
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "teacher" / "model")
    assert model.config.num_hidden_layers == 2 and (tmp_path / "teacher" / "model" / "tokenizer.json").exists()


def test_init_scratch_saves_the_untrained_architecture(world, tmp_path, capsys):
    """`init-scratch` (formerly `init-teacher`): the pretrain-teacher shape, seeded random weights, no training; bad seeds
    and unknown keys are refused naming the field, leaving no output behind."""
    import torch
    from transformers import AutoModelForMaskedLM

    from minialbert.cli import main

    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 64}

    def init(name, seed):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(
            {"tokenizer": str(world["tokenizer"]), "model": shape, "seed": seed}))
        assert main(["init-scratch", "--config", str(tmp_path / f"{name}.yaml"), "--output", str(tmp_path / name)]) == 0
        return AutoModelForMaskedLM.from_pretrained(tmp_path / name / "model")

    a, again, other = init("a", 0), init("again", 0), init("other", 1)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 32
    assert (tmp_path / "a" / "model" / "tokenizer.json").exists()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["steps"] == 0 and metrics["seed"] == 0
    wa, wo = a.state_dict(), other.state_dict()
    assert all(torch.equal(w, again.state_dict()[k]) for k, w in wa.items())  # seeded
    assert not torch.equal(wa["bert.encoder.layer.0.attention.self.query.weight"],
                           wo["bert.encoder.layer.0.attention.self.query.weight"])

    for bad, field in (({"seed": "zero"}, "seed"), ({"steps": 3}, "steps")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"tokenizer": str(world["tokenizer"]), "model": shape, **bad}))
        with pytest.raises(ConfigError, match=f"bad.yaml: {field}"):
            from minialbert.distill import run_command

            run_command("init-scratch", tmp_path / "bad.yaml", tmp_path / "bad")
        assert not (tmp_path / "bad").exists()

    capsys.readouterr()
    assert main(["init-teacher", "--config", str(tmp_path / "a.yaml"), "--output", str(tmp_path / "old")]) == 2
    assert "init-scratch" in capsys.readouterr().err and not (tmp_path / "old").exists()


@pytest.mark.parametrize("output_dir_lost", [False, True], ids=["output-kept", "output-deleted"])
def test_sigkill_then_restart_resumes_and_finishes(world, tmp_path, output_dir_lost):
    """Killed, then restarted: it resumes from its checkpoint and its history (train_log.jsonl,
    TensorBoard) covers every logging step from the first, also when the output dir was deleted
    in between, as Snakemake does before it reruns a job (the checkpoints live elsewhere)."""
    checkpoints = tmp_path / "checkpoints"
    cfg = distill_config(world, tmp_path / "c.yaml", max_steps=16, checkpoint_interval=2, log_interval=1,
                         checkpoint_dir=str(checkpoints))
    out = tmp_path / "out"
    cmd = _cli("distill", "--config", str(cfg), "--output", str(out))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir()):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "model").exists()
    if output_dir_lost:
        shutil.rmtree(out)
    done = _run(cmd, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from checkpoint" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 16
    log = _log(out)
    assert any(r.get("event") == "resume" for r in log)
    assert [r["step"] for r in log if "event" not in r] == list(range(1, 17))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == list(range(1, 17))
    import minialbert  # noqa: F401
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(out / "model")


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun not installed")
def test_torchrun_two_processes_save_one_student(world, tmp_path):
    cfg = distill_config(world, tmp_path / "c.yaml", max_steps=3, batch_size=4)
    out = tmp_path / "out"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "minialbert.cli", "distill",
           "--config", str(cfg), "--output", str(out)]
    done = _run(cmd, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    assert [p.name for p in out.iterdir() if p.name == "model"] == ["model"]
    assert not [p for p in out.iterdir() if p.name.startswith(".model")]  # no leftover temporary dirs
    import minialbert  # noqa: F401
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(out / "model")


def test_distillation_resumed_from_a_periodic_checkpoint_logs_the_uninterrupted_losses_bit_for_bit(world, tmp_path):
    """The issue's check on a real objective with dropout in the student: 8 steps, a checkpoint
    every 4 (kept), a log line every 3; the same config resumed from the step-4 checkpoint in a
    fresh checkpoint dir logs exactly the losses and lr of the uninterrupted run."""
    cfg_path = distill_config(world, tmp_path / "c.yaml", max_steps=8, checkpoint_interval=4, log_interval=3,
                              keep_checkpoints_when_done=True, checkpoint_dir=str(tmp_path / "straight-ckpt"))
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["student"].update(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.1)
    cfg_path.write_text(yaml.safe_dump(cfg))
    _distill(cfg_path, tmp_path / "straight")
    shutil.copytree(tmp_path / "straight-ckpt" / "step-00000004", tmp_path / "resume-ckpt" / "step-00000004")
    cfg["training"]["checkpoint_dir"] = str(tmp_path / "resume-ckpt")  # operational: the same resume identity
    cfg_path.write_text(yaml.safe_dump(cfg))
    _distill(cfg_path, tmp_path / "resumed")
    straight, resumed = _log(tmp_path / "straight"), _log(tmp_path / "resumed")
    assert {"event": "resume", "step": 4, "checkpoint": str(tmp_path / "resume-ckpt" / "step-00000004")} in resumed
    from minialbert.flops import PERF_FIELDS

    def computed(log):  # all but the wall clock and the speed figures measured with it
        return [{k: v for k, v in r.items() if k != "elapsed_seconds" and k not in PERF_FIELDS} for r in log
                if "event" not in r]

    assert computed(resumed) == computed(straight)  # every loss component and lr equal, as floats
    assert [r["step"] for r in computed(straight)] == [3, 6, 8]
