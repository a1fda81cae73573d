"""training.batch_size is the global batch: the same config trains alike on 1 and 2 processes
(gloo under torchrun), and a run stopped on one number of processes resumes on the other with
the step count, the schedule and the rows of an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ddp_rows_job import rows_seen, run_job
from distill_world import make_tokenizer, make_windows, one_thread  # noqa: F401
from minialbert.utils import ConfigError

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                                 reason="torchrun not installed")]

ROOT = Path(__file__).parent.parent
# 20 rows, global batch 8 in micro-batches of at most 4: 3 steps an epoch (8, 8 and 4 rows), 2
# micro-batches each (one process accumulates both, two processes take one each); 2 epochs
TRAINING = {"lr": 1e-2, "warmup_steps": 2, "batch_size": 8, "max_batch_per_device": 4, "epochs": 2, "seed": 3,
            "log_interval": 1, "checkpoint_interval": 100, "device": "cpu"}
# float sums in another order (accumulation on one process, an all-reduce on two), through Adam:
# measured at most 6e-8 relative over the 6 steps; micro-batches of another size (other masks
# and per-micro-batch means) move the losses by far more than 1e-5
LOSS_RTOL = 1e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("global_batch")
    tok = make_tokenizer(root / "tok")
    make_windows(root / "windows", tok, n=20)
    return {"tokenizer": str(root / "tok"), "windows": str(root / "windows")}


def torchrun(world, output: Path, rows: Path, stop_at_call: int | None = None, training: dict | None = None,
             dropout: float = 0.0) -> subprocess.CompletedProcess:
    args = json.dumps({**world, "output": str(output), "training": training or TRAINING, "rows": str(rows),
                       "stop_at_call": stop_at_call, "dropout": dropout})
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "ddp_rows_job.py"), args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"torchrun timed out: {proc.communicate()[1][-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def in_process(world, output: Path, rows: Path, stop_at_call: int | None = None) -> dict:
    return run_job(**world, output=str(output), training=TRAINING, rows=str(rows), stop_at_call=stop_at_call)


def log(output: Path) -> list[dict]:
    return [r for r in map(json.loads, (output / "train_log.jsonl").read_text().splitlines()) if "event" not in r]


def max_rel_diff(a: list[dict], b: list[dict]) -> float:
    return max(abs(x["total"] - y["total"]) / abs(x["total"]) for x, y in zip(a, b, strict=True))


def test_one_and_two_processes_take_the_same_steps(world, tmp_path):
    one = in_process(world, tmp_path / "one", tmp_path / "rows-one")
    done = torchrun(world, tmp_path / "two", tmp_path / "rows-two")
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert one["batch_layout"] == {"batch_size": 8, "world_size": 1, "micro_batch_size": 4, "accumulation": 2}
    assert two["batch_layout"] == {"batch_size": 8, "world_size": 2, "micro_batch_size": 4, "accumulation": 1}
    assert one["steps"] == two["steps"] == 6 and one["tokens_seen"] == two["tokens_seen"]
    a, b = log(tmp_path / "one"), log(tmp_path / "two")
    assert [(r["step"], r["lr"]) for r in a] == [(r["step"], r["lr"]) for r in b]
    print("1 vs 2 processes, largest relative loss difference:", max_rel_diff(a, b))
    assert [r["total"] for r in b] == pytest.approx([r["total"] for r in a], rel=LOSS_RTOL)
    assert rows_seen(tmp_path / "rows-one") == rows_seen(tmp_path / "rows-two")


@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)], ids=["2-then-1", "1-then-2"])
def test_a_run_stopped_on_one_world_size_resumes_on_another(world, tmp_path, first, then):
    """Stopped by SIGTERM in step 4 of 6 (mid-epoch 2) on `first` processes, resumed on `then`:
    the steps, the lr of every step and the rows seen (a multiset over both parts) are the
    uninterrupted run's, and the losses stay within LOSS_RTOL of it."""
    straight = in_process(world, tmp_path / "straight", tmp_path / "rows-straight")
    out, rows = tmp_path / "cut", tmp_path / "rows-cut"
    if first == 2:
        stopped = torchrun(world, out, rows, stop_at_call=4)  # one micro-batch a step per process
        assert stopped.returncode != 0 and "SIGTERM at step 4" in stopped.stderr, stopped.stderr[-3000:]
    else:
        from minialbert.training import TrainingInterrupted

        with pytest.raises(TrainingInterrupted, match="SIGTERM at step 4"):
            in_process(world, out, rows, stop_at_call=8)  # two micro-batches a step
    if then == 2:
        done = torchrun(world, out, rows)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "written by 1 process(es)" in done.stderr
    else:
        in_process(world, out, rows)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == then and metrics["steps"] == straight["steps"] == 6
    assert metrics["tokens_seen"] == straight["tokens_seen"]
    a, b = log(tmp_path / "straight"), log(out)
    assert [(r["step"], r["lr"]) for r in b] == [(r["step"], r["lr"]) for r in a]
    print(f"{first} then {then} processes, largest relative loss difference:", max_rel_diff(a, b))
    assert [r["total"] for r in b] == pytest.approx([r["total"] for r in a], rel=LOSS_RTOL)
    assert rows_seen(rows) == rows_seen(tmp_path / "rows-straight")


def test_two_processes_resumed_on_two_log_the_uninterrupted_losses_bit_for_bit(world, tmp_path):
    """With dropout (each rank its own stream): the 2-process run's step-3 checkpoint, resumed by
    2 processes in a fresh checkpoint dir, logs exactly the uninterrupted run's losses: every
    rank's RNG states are in the checkpoint, not rank 0's only."""
    training = {**TRAINING, "checkpoint_interval": 3, "keep_checkpoints_when_done": True}
    done = torchrun(world, tmp_path / "straight", tmp_path / "rows-a", training=training, dropout=0.3)
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-00000003",
                    tmp_path / "resumed" / "checkpoints" / "step-00000003")
    done = torchrun(world, tmp_path / "resumed", tmp_path / "rows-b", training=training, dropout=0.3)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from checkpoint" in done.stderr
    straight = [(r["step"], r["mlm"], r["lr"]) for r in log(tmp_path / "straight")]
    resumed = [(r["step"], r["mlm"], r["lr"]) for r in log(tmp_path / "resumed")]
    assert resumed == straight and [s for s, _, _ in straight] == [1, 2, 3, 4, 5, 6]  # floats compared exactly


def test_a_world_size_that_cannot_split_the_global_batch_is_refused_naming_both(world, tmp_path, monkeypatch):
    """Stopped on 1 process; 3 processes cannot split the global batch of 8: refused before any
    process group is needed, naming both numbers of processes and those that would do."""
    import minialbert.training as training

    with pytest.raises(training.TrainingInterrupted):
        in_process(world, tmp_path / "cut", tmp_path / "rows", stop_at_call=4)
    monkeypatch.setattr(training, "setup_runtime", lambda cfg: training.Runtime(rank=0, world_size=3))
    with pytest.raises(ConfigError, match=r"step-00000002: cannot resume on 3 processes a checkpoint written by 1 "
                                          r"\(4 windows x 2 accumulation step\(s\) each\): training.batch_size: the "
                                          r"global batch \(8\) cannot be split evenly over 3 processes.*1, 2, 4, 8"):
        in_process(world, tmp_path / "cut", tmp_path / "rows")
