"""One command that tells the truth about this engine on a GPU (`bash bench/gpu_check.sh`): the
device, its precision, which fused attention kernel the student's padding mask gets, and the
distillation step at the paper's shape (teacher BERT-base; student H768, E128, 6 recursions with
adapters; batch 48 x 256 per GPU, bf16 where native) eager and compiled, and a fine-tuning step
(sequence classification, batch 32 x 128): seconds per step, tokens/s, model TFLOP/s, MFU, peak
memory. Writes one JSON file, gpu_check.json, to $OUT (or the current directory).

`--dry` runs the same code at tiny shapes on the CPU (CI runs it so that it cannot rot): the
compiled step then uses Dynamo's aot_eager backend (inductor's C++ build takes minutes on a
shared CPU; `--backend inductor` to use it anyway). Budget on one GPU: about 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distill_throughput  # noqa: E402 - the benchmark's models and batch

PAPER = dict(hidden_size=768, heads=12, embedding_size=128, teacher_layers=12, recursions=6, vocab_size=30522,
             batch_size=48, max_length=256)
DRY = dict(hidden_size=32, heads=2, embedding_size=16, teacher_layers=2, recursions=2, vocab_size=64,
           batch_size=2, max_length=16)
FINETUNE = dict(batch_size=32, max_length=128, num_labels=3)
FINETUNE_DRY = dict(batch_size=2, max_length=16, num_labels=3)


def sdpa_backend(q, k, v, mask) -> str:
    """The fused kernel PyTorch's dispatcher picks for these inputs (the student's additive mask)."""
    from torch.nn.attention import SDPBackend

    try:
        choice = torch._fused_sdp_choice(q, k, v, mask, 0.0, False)
    except (AttributeError, RuntimeError) as e:  # a private API: name the failure, do not guess
        return f"unknown ({type(e).__name__})"
    return SDPBackend(choice).name.lower()


def timed(step, steps: int, sync) -> tuple[list[float], float]:
    """(seconds of each timed step, seconds of the first, untimed-for-the-median step)."""
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return times, first


def sig(x: float) -> float:
    """x to 4 significant digits (tiny dry-run figures stay non-zero)."""
    return float(f"{x:.4g}")


def figures(times, tokens, flops, peak, device) -> dict:
    median = statistics.median(times)
    out = {"seconds_per_step": sig(median), "tokens_per_second": sig(tokens / median),
           "tflops_per_second": sig(flops / median / 1e12), "mfu": None if not peak else sig(flops / median / peak)}
    from minialbert.training import peak_memory_bytes  # max allocated on CUDA, max RSS on the CPU

    out["peak_memory_bytes"] = peak_memory_bytes(device)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry", action="store_true", help="tiny shapes on the CPU (CI)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 10, dry: 2)")
    p.add_argument("--backend", default=None, help="torch.compile backend (default: inductor; dry: aot_eager)")
    p.add_argument("--output", default=None, help="default: $OUT/gpu_check.json, else ./gpu_check.json")
    args = p.parse_args(argv)

    from minialbert.flops import distillation_step_flops, finetune_step_flops, peak_flops
    from minialbert.loss_terms import default_weights
    from minialbert.objective import DistillationModule
    from minialbert.recursions import uniform_layer_map
    from minialbert.training import compile_step

    started = time.perf_counter()
    if not args.dry and not torch.cuda.is_available():
        p.error("no CUDA device: run with --dry for the CPU check")
    device = torch.device("cpu" if args.dry else "cuda")
    steps = args.steps or (2 if args.dry else 10)
    backend = args.backend or ("aot_eager" if args.dry else "inductor")
    cuda = device.type == "cuda"
    capability = torch.cuda.get_device_capability(device) if cuda else None
    native_bf16 = bool(capability and capability >= (8, 0))
    precision = "bf16" if native_bf16 else "fp32"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak, peak_source = peak_flops(device, precision)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=native_bf16)
    report = {
        "dry": args.dry, "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "capability": None if capability is None else f"{capability[0]}.{capability[1]}",
        "native_bf16": native_bf16, "precision": precision, "torch": torch.__version__,
        "cuda": torch.version.cuda, "compile_backend": backend,
        "peak_tflops": None if peak is None else sig(peak / 1e12), "peak_source": peak_source,
    }

    # --- the distillation step
    shape = argparse.Namespace(**(DRY if args.dry else PAPER))
    teacher, student = distill_throughput.make_models(shape, device)
    batch = distill_throughput.make_batch(shape, device)
    engine = DistillationModule(student, teacher, layer_map=uniform_layer_map(shape.recursions, shape.teacher_layers),
                                weights=default_weights())
    student.train()
    with torch.no_grad(), autocast:
        h, mask = student.minialbert.embed(batch["input_ids"], batch["attention_mask"])
        attention = student.minialbert.layer.attention
        q = attention._heads(attention.query(h))
        report["sdpa_backend"] = sdpa_backend(q, q, q, mask)
    opt = torch.optim.AdamW(engine.parameters(), lr=1e-5, fused=cuda)
    B, T = batch["input_ids"].shape
    tokens = int(batch["attention_mask"].sum())
    flops = distillation_step_flops(engine, B, T, batch["masked_positions"].numel())

    distill = {"shape": vars(shape), "tokens_per_step": tokens, "model_tflops_per_step": sig(flops / 1e12),
               "student_attention": "recompute" if cuda else "eager"}
    for name, module in (("eager", engine), ("compiled", compile_step(engine, backend if backend != "inductor"
                                                                      else True))):
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times, first = timed(distill_throughput.step_function(module, opt, batch, autocast), steps, sync)
        distill[name] = figures(times, tokens, flops, peak, device)
        distill[name]["first_step_seconds"] = round(first, 2)
    distill["compiled_over_eager"] = round(distill["eager"]["seconds_per_step"] /
                                           distill["compiled"]["seconds_per_step"], 3)
    report["distill"] = distill
    del engine, teacher, student, opt, batch
    if cuda:
        torch.cuda.empty_cache()

    # --- a fine-tuning step (full fine-tuning, AdamW)
    import minialbert

    ft = FINETUNE_DRY if args.dry else FINETUNE
    cfg = minialbert.MiniAlbertConfig(vocab_size=shape.vocab_size, embedding_size=shape.embedding_size,
                                      hidden_size=shape.hidden_size, num_hidden_layers=shape.recursions,
                                      num_attention_heads=shape.heads, intermediate_size=4 * shape.hidden_size,
                                      num_labels=ft["num_labels"])
    model = minialbert.MiniAlbertForSequenceClassification(cfg).to(device).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, shape.vocab_size, (ft["batch_size"], ft["max_length"]), generator=g).to(device)
    labels = torch.randint(0, ft["num_labels"], (ft["batch_size"],), generator=g).to(device)
    ft_opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)

    def finetune_step():
        with autocast:
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        ft_opt.step()
        ft_opt.zero_grad(set_to_none=True)

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    ft_flops = finetune_step_flops(cfg, ft["batch_size"], ft["max_length"], ft["num_labels"], per_token=False)
    times, first = timed(finetune_step, steps, sync)
    report["finetune"] = {"shape": ft, "model_tflops_per_step": sig(ft_flops / 1e12),
                          **figures(times, ids.numel(), ft_flops, peak, device), "first_step_seconds": round(first, 2)}
    report["wall_seconds"] = round(time.perf_counter() - started, 1)

    out = Path(args.output) if args.output else Path(os.environ.get("OUT") or ".") / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, sort_keys=True))
    print(f"gpu_check: wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
