"""The engine's training-loop side (issue 18): fixed shapes (pad_to and a fixed masked budget
whose padding weighs zero), a compiled step traced once (Dynamo's counters), compiled and eager
giving the same losses and gradients, activation checkpointing and tokens/s, TFLOP/s, MFU and
peak memory in train_log.jsonl, TensorBoard and metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from distill_world import distill_config, make_world, one_thread  # noqa: F401
from minialbert.utils import ConfigError
from test_distill_loss import tiny_batch, tiny_student, tiny_teacher

pytestmark = pytest.mark.usefixtures("one_thread")
PERF = ("tokens_per_second", "tflops_per_second", "mfu", "peak_memory_bytes")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("engine_world"))


def _train(world, tmp_path, name, **training):
    from minialbert.distill import load_config, train_model

    cfg = distill_config(world, tmp_path / f"{name}.yaml", **training)
    metrics = train_model(load_config("distill", cfg), tmp_path / name)
    log = [json.loads(x) for x in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
    return metrics, [r for r in log if "event" not in r]


def test_fixed_shapes_pad_every_batch_to_the_longest_window_and_a_fixed_budget(world):
    from transformers import AutoTokenizer

    from minialbert.data.mlm import SeededMLMCollator, load_windows, longest_window, masked_budget

    windows = load_windows(world["windows"])
    longest = longest_window(windows)
    assert longest == max(len(r) for r in windows["input_ids"])
    tok = AutoTokenizer.from_pretrained(world["tokenizer"])
    collate = SeededMLMCollator(tok, 0.15, pad_to=longest, batch_size=4)
    assert collate.budget == masked_budget(4, longest, 0.15) and collate.budget % 8 == 0
    shapes = set()
    for start in range(0, 24, 4):
        rows = [{c: windows[i][c] for c in ("input_ids", "attention_mask", "special_tokens_mask")}
                for i in range(start, start + 4)]
        rows[0]["_seed"] = start
        batch = collate(rows)
        shapes.add((tuple(batch["input_ids"].shape), batch["masked_positions"].numel()))
        labelled = int((batch["labels"] != -100).sum())
        assert 0 < labelled == int((batch["masked_positions"] >= 0).sum())  # every labelled position kept
    assert shapes == {((4, longest), collate.budget)}
    short = SeededMLMCollator(tok, 0.15, pad_to=longest - 1, batch_size=4)
    with pytest.raises(ConfigError, match=f"training.pad_to: {longest - 1}, but a window has {longest} tokens"):
        short([{c: windows[i][c] for c in ("input_ids", "attention_mask")} for i in range(len(windows))
               if len(windows[i]["input_ids"]) == longest][:1])


def test_masked_budget_padding_weighs_zero():
    """The same losses whatever the number of -1 entries padding the masked positions (rel 1e-6)."""
    from minialbert.data.mlm import masked_positions_from_labels
    from minialbert.objective import distillation_losses

    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    with torch.no_grad():
        tight = distillation_losses(student, teacher, {**batch, "masked_positions": masked_positions_from_labels(
            batch["labels"])})
        padded = distillation_losses(student, teacher, {**batch, "masked_positions": masked_positions_from_labels(
            batch["labels"], budget=40)})
    assert masked_positions_from_labels(batch["labels"], budget=40).numel() == 40
    for k, v in tight.items():
        assert float(padded[k]) == pytest.approx(float(v), rel=1e-6), k
    with pytest.warns(UserWarning, match="6 masked positions exceed the fixed budget of 4"):
        assert masked_positions_from_labels(batch["labels"], budget=4).numel() == 8  # all kept


def test_compiled_step_is_traced_once_and_logs_mfu(world, tmp_path):
    """training.compile with pad_to: max_length: Dynamo compiles one graph at the first step and
    none after it (its counters), with the teacher inside it (no graph break)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    metrics, log = _train(world, tmp_path, "compiled", max_steps=4, log_interval=1, checkpoint_interval=10,
                          pad_to="max_length", compile="aot_eager", gradient_checkpointing=True)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["frames"]["total"] == counters["frames"]["ok"] == 1  # one frame, compiled once, not retraced
    for r in log:
        assert all(math.isfinite(r[k]) for k in ("total", "attention"))
        assert r["tokens_per_second"] > 0 and r["tflops_per_second"] > 0 and r["peak_memory_bytes"] > 0
        assert 0 < r["mfu"] < 1.5  # against the measured CPU matmul peak (tiny shapes: far below it)
    assert metrics["mfu"] > 0 and metrics["tflops_per_second"] > 0 and "measured" in metrics["peak_flops_source"]
    torch._dynamo.reset()


def test_perf_fields_reach_tensorboard_and_stay_out_of_the_loss_panels(world, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minialbert.plots import loss_panels

    _, log = _train(world, tmp_path, "plain", max_steps=2, log_interval=1, checkpoint_interval=10)
    assert all(r[k] is not None for r in log for k in PERF)
    events = EventAccumulator(str(tmp_path / "plain" / "tensorboard"))
    events.Reload()
    assert {f"perf/{k}" for k in PERF} <= set(events.Tags()["scalars"])
    assert not set(PERF) & set(loss_panels([log]))


def test_compiled_and_eager_steps_give_the_same_losses_and_gradients():
    """torch.compile of the distillation step (module forward: teacher, student, losses; its
    backward) against eager on the same batch, dropout off: losses rel 1e-5, gradients rel 1e-4
    / abs 1e-5. Backend aot_eager here (the suite's time budget: inductor's C++ build takes
    minutes on a shared CPU); bench/distill_throughput.py --compile compares inductor."""
    from minialbert.objective import DistillationModule
    from minialbert.training import compile_step

    import copy

    teacher, student, batch = tiny_teacher(), tiny_student(), tiny_batch()
    results = []
    for compiled in (False, True):
        torch._dynamo.reset()
        module = DistillationModule(copy.deepcopy(student), teacher)
        step = compile_step(module, "aot_eager") if compiled else module
        losses = step(batch)
        losses["total"].backward()
        results.append(({k: float(v.detach()) for k, v in losses.items()},
                        {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}))
    (eager, eager_grads), (comp, comp_grads) = results
    for k, v in eager.items():
        assert comp[k] == pytest.approx(v, rel=1e-5), k
    assert eager_grads.keys() == comp_grads.keys() and eager_grads
    for name, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], g, rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
