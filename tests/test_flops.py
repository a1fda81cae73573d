"""The FLOP model (minialbert.flops) against torch's FlopCounterMode: within 5% (the issue's
bar; today it matches exactly) for distillation steps at two shapes, both student attention
paths, a relaxed student of another width with the relation term, teacher pre-training, and
fine-tuning steps; and the peak table."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import minialbert
from minialbert.flops import (distillation_step_flops, finetune_step_flops, gpu_peak_tflops,
                              measured_cpu_matmul_peak, peak_flops)
from minialbert.loss_terms import default_weights, teacher_free_weights
from minialbert.objective import DistillationModule

from distill_world import one_thread  # noqa: F401
from tiny_models import batch as model_batch, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("distill_throughput", ROOT / "bench" / "distill_throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def counted(step) -> int:
    """FLOPs FlopCounterMode counts for `step()`; SDPA on its math backend, whose matrix products
    it counts on the CPU (it has no formula for the CPU's fused kernel)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


SHAPES = [dict(hidden_size=64, heads=4, embedding_size=16, batch_size=2, max_length=32, vocab_size=500,
               teacher_layers=4, recursions=2),
          dict(hidden_size=96, heads=4, embedding_size=96, batch_size=3, max_length=48, vocab_size=800,
               teacher_layers=6, recursions=3)]


@pytest.mark.parametrize("attention", ["eager", "recompute"])
@pytest.mark.parametrize("shape", SHAPES, ids=["E16-H64-T32", "E96-H96-T48"])
def test_distillation_step_flops_match_the_flop_counter(shape, attention):
    bench = _bench()
    args = argparse.Namespace(**shape)
    teacher, student = bench.make_models(args, torch.device("cpu"))
    batch = bench.make_batch(args, torch.device("cpu"))
    module = DistillationModule(student, teacher, weights=default_weights())
    module.objective.student_attention = attention
    expected = counted(lambda: module(batch)["total"].backward())
    B, T = batch["input_ids"].shape
    assert distillation_step_flops(module, B, T, batch["masked_positions"].numel()) == pytest.approx(expected, rel=0.05)


def test_relaxed_student_of_another_width_with_relation_term():
    bench = _bench()
    args = argparse.Namespace(**SHAPES[0])
    teacher, _ = bench.make_models(args, torch.device("cpu"))
    student = minialbert.MiniAlbertForMaskedLM(minialbert.MiniAlbertConfig(
        vocab_size=500, embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, reduction_factor=4, lora_rank=3, lora_targets=["query", "ffn"]))
    batch = bench.make_batch(args, torch.device("cpu"))
    weights = {**default_weights(), "relation": 1.0, "embedding": 1.0}
    module = DistillationModule(student, teacher, weights=weights, relation={"heads": 4})
    assert module.projection_names == ["hidden", "embedding"]
    expected = counted(lambda: module(batch)["total"].backward())
    B, T = batch["input_ids"].shape
    assert distillation_step_flops(module, B, T, batch["masked_positions"].numel()) == pytest.approx(expected, rel=0.05)


def test_teacher_pretraining_step_flops():
    from transformers import BertConfig, BertForMaskedLM

    bench = _bench()
    args = argparse.Namespace(**SHAPES[1])
    model = BertForMaskedLM(BertConfig(vocab_size=800, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=128))
    module = DistillationModule(model, None, weights=teacher_free_weights())
    batch = bench.make_batch(args, torch.device("cpu"))
    expected = counted(lambda: module(batch)["total"].backward())
    B, T = batch["input_ids"].shape
    assert distillation_step_flops(module, B, T, batch["masked_positions"].numel()) == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("cls", [minialbert.MiniAlbertForSequenceClassification,
                                 minialbert.MiniAlbertForTokenClassification])
def test_finetune_step_flops_match_the_flop_counter(cls):
    model = cls(tiny_config(num_labels=3, lora_rank=2))
    inputs = model_batch(B=4, T=10)
    per_token = cls is minialbert.MiniAlbertForTokenClassification
    labels = torch.zeros((4, 10) if per_token else (4,), dtype=torch.long)
    expected = counted(lambda: model(**inputs, labels=labels).loss.backward())
    assert finetune_step_flops(model.config, 4, 10, 3, per_token) == pytest.approx(expected, rel=0.05)


def test_peaks():
    assert gpu_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert gpu_peak_tflops("NVIDIA H100 PCIe", "bf16") == 756.0  # the longer name wins
    assert gpu_peak_tflops("NVIDIA A100-SXM4-40GB", "tf32") == 156.0
    assert gpu_peak_tflops("Tesla V100-SXM2-16GB", "tf32") == 15.7  # no TF32: plain fp32
    assert gpu_peak_tflops("Some Future GPU", "bf16") is None
    peak, source = peak_flops("cpu", "fp32")
    assert peak == measured_cpu_matmul_peak() and peak > 1e8 and "measured" in source
