"""A FLOP model of a distillation step and of a fine-tuning step, and the peak it is measured
against (model FLOPs utilisation, MFU).

Counted as `torch.utils.flop_counter.FlopCounterMode` counts them (and checked against it in the
tests): the matrix products only (2 FLOPs per multiply-add), at the padded shape the kernels
really run (B x T tokens, K gathered masked positions); element-wise work (softmax, LayerNorm,
GELU, the losses' reductions) is left out. A backward pass costs twice its forward (gradients
of the inputs and of the weights). These are *model* FLOPs: activation checkpointing's
recomputation is not counted (MFU, not hardware utilisation).

A distillation step (`distillation_step_flops`) is:
- the teacher's forward (no gradient): every layer at B x T, its MLM head at the K positions,
  and the recomputed attention probabilities softmax(QK^T) of the matched layers;
- the student's forward and backward: the projector E -> H, every recursion (adapters, LoRA
  deltas merged into their weights, the attention and feed-forward blocks), the recomputed probabilities of the recursions
  whose attentions the loss reads when they are recomputed beside the fused kernel, and the MLM
  head at the K positions;
- the losses' matrix products: the Linear(H_s, H_t) projections of the hidden-state terms when
  the widths differ, and the relation term's Q-Q, K-K, V-V products.

Peaks (`peak_flops`): dense bf16/fp16 and fp32 (and TF32) tensor throughput by GPU name from the
vendors' data sheets (`GPU_PEAK_TFLOPS`); on the CPU, the best measured rate of a large fp32
matrix product on this process's threads (`measured_cpu_matmul_peak`).
"""

from __future__ import annotations

import functools
import time
from typing import Any

# what the training loop logs beside the losses (train_log.jsonl, TensorBoard perf/*): tokens/s of
# all ranks, achieved model TFLOP/s of one device, MFU against its peak, peak memory
PERF_FIELDS = ("tokens_per_second", "tflops_per_second", "mfu", "peak_memory_bytes")

# name fragment (matched in torch.cuda.get_device_name, longest first) -> dense TFLOP/s
# {"bf16": bf16 (fp16 where the GPU has no bf16), "tf32": TF32 tensor cores, "fp32": plain fp32}
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "tf32": 494.5, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2},
    "H100": {"bf16": 989.0, "tf32": 494.5, "fp32": 66.9},  # SXM
    "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.1, "tf32": 183.0, "fp32": 91.6},
    "L4": {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3},
    "A10": {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2},
    "V100": {"bf16": 125.0, "fp32": 15.7},  # fp16 tensor cores; no bf16, no TF32
    "T4": {"bf16": 65.0, "fp32": 8.1},  # fp16 tensor cores; no bf16, no TF32
}


# ----------------------------------------------------------------------------------------
# the model


def _linear(tokens: int, n_in: int, n_out: int) -> int:
    return 2 * tokens * n_in * n_out


def attention_scores_flops(B: int, T: int, H: int) -> int:
    """QK^T over all heads: (B, nh, T, hs) x (B, nh, hs, T)."""
    return 2 * B * T * T * H


def _config_sizes(cfg) -> dict[str, Any]:
    """The sizes the model reads from a MiniALBERT or a BERT-family config."""
    H = int(cfg.hidden_size)
    return {"H": H, "I": int(cfg.intermediate_size), "V": int(cfg.vocab_size), "layers": int(cfg.num_hidden_layers),
            "E": int(getattr(cfg, "embedding_size", None) or H),
            "adapter": (H // int(cfg.reduction_factor)) if getattr(cfg, "use_adapter", False) else 0,
            "lora_rank": int(getattr(cfg, "lora_rank", 0) or 0),
            "lora_targets": tuple(getattr(cfg, "relaxation_targets", ()))}


def encoder_forward_flops(cfg, B: int, T: int) -> int:
    """One forward of an encoder (MiniALBERT: projector and every recursion with its adapters and
    LoRA deltas; BERT: every layer) at B x T tokens, embeddings (lookups) excluded."""
    s, n = _config_sizes(cfg), B * T
    H, I = s["H"], s["I"]
    layer = _linear(n, H, 3 * H) + _linear(n, H, H) + _linear(n, H, I) + _linear(n, I, H)
    layer += 2 * attention_scores_flops(B, T, H)  # QK^T and probs @ V
    if s["adapter"]:
        layer += 2 * (_linear(n, H, s["adapter"]) + _linear(n, s["adapter"], H))  # one before each block
    if s["lora_rank"]:
        shapes = {"query": (H, H), "key": (H, H), "value": (H, H), "dense": (H, H), "ffn": (H, I), "ffn_output": (I, H)}
        for target in s["lora_targets"]:  # the delta is merged into the weight: W + scale B A, once a step
            n_in, n_out = shapes[target]
            layer += _linear(n_out, s["lora_rank"], n_in)
    projector = _linear(n, s["E"], H) if s["E"] != H else 0
    return projector + s["layers"] * layer


def mlm_head_flops(cfg, K: int) -> int:
    """The MLM head at K positions: Linear(H, H) then Linear(H, V)."""
    s = _config_sizes(cfg)
    return _linear(K, s["H"], s["H"]) + _linear(K, s["H"], s["V"])


def distillation_step_flops(module, B: int, T: int, K: int) -> int:
    """Model FLOPs of one training step of `module` (a `minialbert.objective.DistillationModule`)
    on a (B, T) batch with K gathered masked positions (the padded budget: the heads run there)."""
    from minialbert.loss_terms import LOSS_TERMS  # noqa: F401 - the table `computed_terms` walks
    from minialbert.modeling import MiniAlbertModel

    objective, student, teacher = module.objective, module.student, module.teacher
    projections = {name: getattr(module, f"{name}_projection") for name in module.projection_names}
    terms = objective.computed_terms(projections)
    wants_student = {o for _, t in terms for o in t.student}
    wants_teacher = {o for _, t in terms for o in t.teacher}
    flops = 0
    if teacher is not None and objective.uses_teacher:
        t_cfg = teacher.config
        flops += encoder_forward_flops(t_cfg, B, T) + mlm_head_flops(t_cfg, K)
        if "attentions" in wants_teacher:
            flops += len(set(objective.layer_map)) * attention_scores_flops(B, T, int(t_cfg.hidden_size))
        if "qkv" in wants_teacher:
            flops += 3 * attention_scores_flops(B, T, int(t_cfg.hidden_size))  # relation products, no gradient
    s_cfg = student.config
    H_s = int(s_cfg.hidden_size)
    student_forward = encoder_forward_flops(s_cfg, B, T) + mlm_head_flops(s_cfg, K)
    encoder = getattr(student, "base_model", student)
    recomputed = (
        "attentions" in wants_student and isinstance(encoder, MiniAlbertModel)
        and (objective.student_attention == "recompute"
             or (objective.student_attention == "auto" and next(encoder.parameters()).device.type != "cpu")))
    if recomputed:
        student_forward += int(s_cfg.num_hidden_layers) * attention_scores_flops(B, T, H_s)
    if "qkv" in wants_student:
        student_forward += 3 * attention_scores_flops(B, T, H_s)  # relation products
    for name in projections:  # Linear(H_s, H_t) of each compared hidden state
        if any(n == name for n, _ in terms):
            compared = len(objective.layer_map) if name == "hidden" else 1
            student_forward += compared * _linear(B * T, H_s, int(teacher.config.hidden_size))
    return flops + 3 * student_forward  # forward + backward (twice the forward)


def finetune_step_flops(cfg, B: int, T: int, num_labels: int, per_token: bool) -> int:
    """Model FLOPs of one fine-tuning step (forward and backward) of a MiniALBERT classifier:
    the encoder at B x T and the Linear(H, L) head on [CLS] (or on every token)."""
    head = _linear(B * T if per_token else B, int(cfg.hidden_size), num_labels)
    return 3 * (encoder_forward_flops(cfg, B, T) + head)


# ----------------------------------------------------------------------------------------
# peaks


def gpu_peak_tflops(name: str, precision: str) -> float | None:
    """The dense peak (TFLOP/s) of the GPU called `name` at `precision` ("bf16", "tf32" or
    "fp32"), None for a GPU the table does not know."""
    for fragment in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):
        if fragment.lower() in name.lower():
            row = GPU_PEAK_TFLOPS[fragment]
            return row.get(precision, row["fp32"] if precision == "tf32" else None)
    return None


def measured_cpu_matmul_peak(size: int = 1024, seconds: float = 0.5, cached: bool = True) -> float:
    """The best rate (FLOP/s) of an fp32 (size x size) @ (size x size) product on this process's
    threads, over repeats for about `seconds` (the fastest repeat: slower ones measure other
    processes); measured once per process, size and thread count unless `cached` is False."""
    import torch

    if not cached:
        return _time_matmul(size, seconds)
    return _cached_matmul_peak(size, seconds, torch.get_num_threads())


@functools.lru_cache(maxsize=None)
def _cached_matmul_peak(size: int, seconds: float, threads: int) -> float:  # noqa: ARG001 - part of the key
    return _time_matmul(size, seconds)


def _time_matmul(size: int, seconds: float) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up (allocator, thread pool)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds or best == float("inf"):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def peak_flops(device, precision: str) -> tuple[float | None, str]:
    """(peak FLOP/s for MFU, where it comes from) on `device` at `precision` ("bf16" for bf16 or
    fp16 autocast, "fp32" otherwise: TF32 when torch allows it on CUDA)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if precision == "fp32" and torch.backends.cuda.matmul.allow_tf32:
            precision = "tf32"
        tflops = gpu_peak_tflops(name, precision)
        if tflops is None:
            return None, f"{name}: not in minialbert.flops.GPU_PEAK_TFLOPS"
        return tflops * 1e12, f"{name} {precision} data sheet"
    if device.type == "cpu":
        return measured_cpu_matmul_peak(), f"measured fp32 matmul peak on {torch.get_num_threads()} thread(s)"
    return None, f"{device.type}: no peak known"

