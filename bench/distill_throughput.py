"""Throughput of one distillation training step: this engine versus the authors' naive step.

The engine (minialbert.objective): SDPA teacher, attention probabilities recomputed only for
the matched teacher layers from their captured query/key projections, MLM heads only at the
labelled positions, static-shape masked-sum losses.
The naive step (REFERENCE section 6): the teacher asked for all attention maps through eager
attention, full-vocabulary logits everywhere, losses with boolean-mask selection
(masked_select), as the authors' scripts did.

Prints one JSON line: tokens/s of each, `ratio` (engine speed / naive speed), and, on a GPU, the engine's
model FLOPs utilisation (`mfu`, against --peak-tflops).

With --compile it also times the same step compiled by torch.compile (inductor; the teacher's
forward, the student's forward and backward and the losses in one graph; fused AdamW, as
training.compile gives), interleaved with the eager one, and reports `compiled_over_eager`
(eager median seconds per step / compiled median).
Every run reports the FLOP model's TFLOP per step (`minialbert.flops`) and the achieved fraction
of the device's peak (`mfu`, `compiled_mfu`): on the CPU against the measured fp32 matmul peak
(`peak_tflops`, measured in the same process), on a GPU against --peak-tflops.
With --check-flops, the FLOP model against torch's FlopCounterMode on one step (`flop_model_over_counted`).

With --lora-rank r > 0 it also times the engine's step for the same student relaxed (every
recursion owns a rank-r LoRA delta on all six linears, Bae et al. 2025), interleaved with the
plain one, and reports `relaxed_over_engine`: relaxed seconds per step / plain seconds per step.

    python bench/distill_throughput.py --hidden-size 256 --teacher-layers 12 --recursions 6 --heads 4 \
        --vocab-size 30522 --batch-size 16 --max-length 128 --steps 3 --device cpu
    python bench/distill_throughput.py --compile --skip-naive ...   # compiled against eager
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn


def naive_losses(student, teacher, batch, layer_map, weights, temperature=1.0):
    """The authors' formulation, kept as the reference: every teacher attention map from eager
    attention, full logits, masked_select. `teacher` must use eager attention."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    labels, mask = batch["labels"], batch["attention_mask"]
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    s = student(**inputs, output_hidden_states=True, output_attentions=True)
    V = s.logits.size(-1)
    out = {"mlm": F.cross_entropy(s.logits.view(-1, V), labels.view(-1), ignore_index=-100)}
    sel = (labels != -100).unsqueeze(-1).expand_as(s.logits)
    s_sel = torch.masked_select(s.logits, sel).view(-1, V)
    t_sel = torch.masked_select(t.logits, sel).view(-1, V)
    out["output"] = nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(s_sel / temperature, -1), F.softmax(t_sel / temperature, -1)) * temperature**2
    att = hid = 0.0
    # the authors' reduction="mean" (divides by rows x T); torch warns that it differs from batchmean
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides the total loss")
    cos = nn.CosineEmbeddingLoss()
    for i, j in enumerate(layer_map):
        sa, ta = s.attentions[i], t.attentions[j]
        if sa.shape[1] != ta.shape[1]:
            sa, ta = sa.mean(1, keepdim=True), ta.mean(1, keepdim=True)
        qsel = mask[:, None, :, None].expand_as(sa).bool()
        att = att + nn.KLDivLoss(reduction="mean")(torch.log(torch.masked_select(sa, qsel) + 1e-12),
                                                   torch.masked_select(ta, qsel) + 1e-12)
        hsel = mask.unsqueeze(-1).expand_as(s.hidden_states[i + 1]).bool()
        sh = torch.masked_select(s.hidden_states[i + 1], hsel).view(-1, s.hidden_states[i + 1].size(-1))
        th = torch.masked_select(t.hidden_states[j + 1], mask.unsqueeze(-1).expand_as(t.hidden_states[j + 1]).bool())
        th = th.view(sh.size(0), -1)
        hid = hid + cos(sh, th, torch.ones(sh.size(0), device=sh.device))
    out["attention"], out["hidden"] = att, hid
    hsel = mask.unsqueeze(-1).expand_as(s.hidden_states[0]).bool()
    se = torch.masked_select(s.hidden_states[0], hsel).view(-1, s.hidden_states[0].size(-1))
    te = torch.masked_select(t.hidden_states[0], mask.unsqueeze(-1).expand_as(t.hidden_states[0]).bool())
    te = te.view(se.size(0), -1)
    out["embedding"] = cos(se, te, torch.ones(se.size(0), device=se.device))
    out["total"] = sum(weights[k] * out[k] for k in ("mlm", "attention", "hidden", "output", "embedding")
                       if weights[k] > 0)
    return out


def make_models(args, device, lora_rank: int = 0):
    from transformers import BertConfig, BertForMaskedLM

    import minialbert

    torch.manual_seed(0)
    teacher = BertForMaskedLM(BertConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                                         num_hidden_layers=args.teacher_layers, num_attention_heads=args.heads,
                                         intermediate_size=4 * args.hidden_size,
                                         max_position_embeddings=max(512, args.max_length)))
    student = minialbert.MiniAlbertForMaskedLM(minialbert.MiniAlbertConfig(
        vocab_size=args.vocab_size, embedding_size=args.embedding_size, hidden_size=args.hidden_size,
        num_hidden_layers=args.recursions, num_attention_heads=args.heads, intermediate_size=4 * args.hidden_size,
        max_position_embeddings=max(512, args.max_length), use_adapter=True, reduction_factor=16,
        lora_rank=lora_rank, hidden_dropout_prob=getattr(args, "dropout", 0.1),
        attention_probs_dropout_prob=getattr(args, "dropout", 0.1)))
    return teacher.to(device).eval(), student.to(device)


def make_batch(args, device, seed=0):
    from minialbert.data.mlm import masked_positions_from_labels

    g = torch.Generator().manual_seed(seed)
    B, T = args.batch_size, args.max_length
    ids = torch.randint(5, args.vocab_size, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    masked = (torch.rand(B, T, generator=g) < 0.15) & mask.bool()
    masked[:, 0] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    ids = torch.where(masked, torch.full_like(ids, 4), ids)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": labels}
    batch["masked_positions"] = masked_positions_from_labels(labels)  # built by the collator, off the step
    return {k: v.to(device) for k, v in batch.items()}


def step_function(module, optimizer, batch, autocast):
    """One optimisation step of `module` (a DistillationModule, compiled or not) on `batch`, as a
    function of no arguments to time."""
    def step():
        with autocast:
            losses = module(batch)
        losses["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def compare_steps(module, compiled, batch, autocast) -> dict[str, float]:
    """The largest relative differences between the eager and the compiled step's losses and
    gradients on the same batch (gradients: the largest |difference| over all parameters / the
    largest |eager gradient|; per tensor it would divide by gradients that are zero in exact
    arithmetic, e.g. the key bias's, whose eager value is rounding noise)."""
    out = []
    for step in (module, compiled):
        with autocast:
            losses = step(batch)
        losses["total"].backward()
        out.append(({k: float(v.detach()) for k, v in losses.items()},
                    {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}))
        module.zero_grad(set_to_none=True)
    (losses, grads), (c_losses, c_grads) = out
    return {"compiled_loss_max_rel_diff": max(abs(c_losses[k] - v) / max(abs(v), 1e-12) for k, v in losses.items()),
            "compiled_grad_max_rel_diff": max(float((c_grads[n] - g).abs().max()) for n, g in grads.items())
            / max(float(g.abs().max()) for g in grads.values())}


def counted_flops(step) -> int:
    """FLOPs torch's FlopCounterMode counts for one `step()` (SDPA on its math backend, whose
    matrix products it counts on the CPU too)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--teacher-layers", type=int, default=12)
    p.add_argument("--recursions", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--embedding-size", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=30522)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="autocast (auto: on for CUDA)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak for MFU; default: minialbert.flops' table (GPU) or the measured matmul peak (CPU)")
    p.add_argument("--compile", action="store_true", help="also time the step compiled by torch.compile (inductor)")
    p.add_argument("--check-flops", action="store_true", help="count one step's FLOPs with FlopCounterMode")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="the student's dropout (0: --compile also compares the compiled step's losses and gradients)")
    p.add_argument("--skip-naive", action="store_true", help="time only the engine (e.g. at shapes where naive OOMs)")
    p.add_argument("--lora-rank", type=int, default=0,
                   help="also time the step of the student relaxed with per-recursion LoRA of this rank")
    args = p.parse_args(argv)

    from minialbert.flops import distillation_step_flops, measured_cpu_matmul_peak, peak_flops
    from minialbert.host_memory import retain_freed_memory
    from minialbert.loss_terms import default_weights
    from minialbert.objective import DistillationModule
    from minialbert.recursions import uniform_layer_map
    from minialbert.training import compile_step

    paper_weights = default_weights()
    retain_freed_memory()  # as training does (minialbert.host_memory)

    device = torch.device(args.device)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    teacher, student = make_models(args, device)
    batch = make_batch(args, device)
    layer_map = uniform_layer_map(args.recursions, args.teacher_layers)
    tokens = int(batch["attention_mask"].sum())
    masked = int((batch["labels"] != -100).sum())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    engine = DistillationModule(student, teacher, layer_map=layer_map, weights=paper_weights)
    opt = torch.optim.AdamW(engine.parameters(), lr=1e-5)
    student.train()

    engine_step = step_function(engine, opt, batch, autocast)
    relaxed_step = None
    if args.lora_rank:
        relaxed_student = make_models(args, device, args.lora_rank)[1].train()
        relaxed = DistillationModule(relaxed_student, teacher, layer_map=layer_map, weights=paper_weights)
        relaxed_step = step_function(relaxed, torch.optim.AdamW(relaxed.parameters(), lr=1e-5), batch, autocast)

    naive_teacher = None
    if not args.skip_naive:
        # A separate eager copy of the teacher: asking it for attentions really materialises all of them.
        naive_teacher = copy.deepcopy(teacher)
        naive_teacher.set_attn_implementation("eager")

    def naive_step():
        with autocast:
            losses = naive_losses(student, naive_teacher, batch, layer_map, paper_weights)
        losses["total"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # Steps are interleaved (engine, naive, engine, ...) so that both see the same machine load,
    # and the fastest step of each is reported (timeit's rule: slower repeats measure other
    # processes, not this code); medians are reported beside them.
    steps = {"engine": engine_step} if args.skip_naive else {"engine": engine_step, "naive": naive_step}
    compared = None
    if args.compile:
        # the same module (same parameters, same optimizer), its step compiled; compiled before timing
        compiled = compile_step(engine, True)
        # with the optimizer training gives a compiled step (minialbert.optim: fused AdamW)
        fused_opt = torch.optim.AdamW(engine.parameters(), lr=1e-5, fused=True)
        steps["compiled"] = step_function(compiled, fused_opt, batch, autocast)
        if args.dropout == 0:  # without dropout both must give the same numbers (the first call compiles)
            t0 = time.perf_counter()
            compared = compare_steps(engine, compiled, batch, autocast)
            compared["compile_seconds"] = time.perf_counter() - t0
    if relaxed_step is not None:
        steps["relaxed"] = relaxed_step
    B, T = batch["input_ids"].shape
    flops = distillation_step_flops(engine, B, T, batch["masked_positions"].numel())
    counted = counted_flops(lambda: engine(batch)["total"].backward()) if args.check_flops else None
    opt.zero_grad(set_to_none=True)
    warmup = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        step()
        sync()
        warmup[name] = time.perf_counter() - t0
    peak, peak_source = ((args.peak_tflops * 1e12, "--peak-tflops") if args.peak_tflops
                         else peak_flops(device, "bf16" if bf16 else "fp32"))
    if device.type == "cpu" and not args.peak_tflops:  # the best of a longer measurement before and after the steps
        peak = max(peak, measured_cpu_matmul_peak(seconds=2.0, cached=False))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    if device.type == "cpu" and not args.peak_tflops:
        peak = max(peak, measured_cpu_matmul_peak(seconds=2.0, cached=False))
    result = {
        "device": device.type, "bf16": bf16, "hidden_size": args.hidden_size, "teacher_layers": args.teacher_layers,
        "recursions": args.recursions, "heads": args.heads, "vocab_size": args.vocab_size,
        "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps, "tokens_per_step": tokens,
        "lora_rank": args.lora_rank, "dropout": args.dropout,
    }
    for name, ts in times.items():
        best, median = min(ts), statistics.median(ts)
        result[f"{name}_seconds_per_step"] = round(best, 4)
        result[f"{name}_tokens_per_second"] = round(tokens / best, 1)
        result[f"{name}_tokens_per_second_median"] = round(tokens / median, 1)
    if device.type == "cuda":
        result["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    result["model_tflops_per_step"] = round(flops / 1e12, 4)
    result["masked_positions"] = masked
    result["peak_tflops"] = None if peak is None else round(peak / 1e12, 4)
    result["peak_source"] = peak_source
    result["threads"] = torch.get_num_threads()
    for name in ("engine", "compiled"):
        if name in times and peak:  # the median step: the fraction of the peak the step achieves
            prefix = "" if name == "engine" else "compiled_"
            result[f"{prefix}mfu"] = round(flops / statistics.median(times[name]) / peak, 4)
            result[f"{prefix}mfu_best"] = round(flops / min(times[name]) / peak, 4)
    if counted is not None:
        result["counted_tflops_per_step"] = round(counted / 1e12, 4)
        result["flop_model_over_counted"] = round(flops / counted, 4)
    if compared is not None:
        result.update({k: float(f"{v:.3g}") for k, v in compared.items()})
    if "compiled" in times:
        # the first compiled step: tracing and code generation
        result["compile_seconds"] = round(compared["compile_seconds"] if compared else warmup["compiled"], 1)
        result["compiled_over_eager"] = round(statistics.median(times["engine"]) / statistics.median(times["compiled"]), 3)
        result["compiled_over_eager_best"] = round(min(times["engine"]) / min(times["compiled"]), 3)
    if "naive" in times:
        result["ratio"] = round(min(times["naive"]) / min(times["engine"]), 3)
        result["ratio_median"] = round(statistics.median(times["naive"]) / statistics.median(times["engine"]), 3)
    if "relaxed" in times:
        result["relaxed_over_engine"] = round(min(times["relaxed"]) / min(times["engine"]), 3)
        result["relaxed_over_engine_median"] = round(statistics.median(times["relaxed"]) /
                                                     statistics.median(times["engine"]), 3)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
