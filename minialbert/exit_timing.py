"""Honest wall-clock timing of adaptive depth, and its summary table and plots.

`measure` times one fine-tuning run with exits on its task's reported split (the real examples,
in a seeded random order, at their real lengths), one thread, configurations interleaved
example by example so that machine noise hits them alike:
- batch-1 latency (mean, p50, p95 in ms) of: the teacher (its architecture with a task head),
  the student at full depth (a plain forward), the student cut to a fixed k recursions (k =
  an adaptive setting's mean depth rounded up), and the adaptive student at each epsilon (its
  exit head evaluated after every recursion: that cost is included);
- batch-32 throughput (examples/s, median of repeats) of the same, the adaptive student batched
  naively (every row runs until the slowest stops) and with the batch-shrinking executor.

`summarise` turns every run's exits.json and timing.json into exits.csv (one row per model,
task, mode and epsilon, averaged over lr and seeds) and a score-against-latency plot per task.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from minialbert.utils import ConfigError, read_json


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def measure(run_dir: str | Path, task_dir: str, teacher_dir: str, examples: int = 200, batch_size: int = 32,
            repeats: int = 3, seed: int = 0, max_length: int = 128) -> dict:
    """Latency and throughput of a run with exits (see the module doc) -> timing.json's content."""
    import torch

    import minialbert  # noqa: F401  (Auto classes)
    from minialbert import exits
    from minialbert.command_configs import FinetuneConfig
    from minialbert.finetune import load_tokenizer
    from minialbert.tasks import load_task

    run_dir = Path(run_dir)
    report = read_json(run_dir / "exits.json")
    task = load_task(task_dir)
    kind = task.task_type
    model = kind.auto_model_class().from_pretrained(run_dir / "model").eval()
    exits.check_exit_model(model, str(run_dir / "model"))
    try:
        teacher = kind.auto_model_class().from_pretrained(teacher_dir, **kind.model_kwargs(task.labels)).eval()
    except OSError as e:
        raise ConfigError(f"teacher {teacher_dir}: cannot load a model ({e})") from None
    tokenizer = load_tokenizer(FinetuneConfig(model=str(run_dir / "model"), task=task_dir, output=str(run_dir),
                                              lr=1.0))
    features = kind.encode(task, report["report_split"], tokenizer, max_length)
    target_scale = kind.prepare_targets(kind.encode(task, "train", tokenizer, max_length))
    random.Random(seed).shuffle(features)
    collator = kind.collator(tokenizer)
    keys = ("input_ids", "attention_mask", "token_type_ids")

    def inputs(chunk: list[dict]) -> tuple[dict, Any]:
        batch = collator([{k: f[k] for k in keys if k in f} for f in chunk])
        batch = {k: v for k, v in batch.items() if k in keys}
        return batch, exits.token_mask(chunk, batch["input_ids"].shape[1])

    N = model.config.num_hidden_layers
    settings = report["epsilons"]
    configs: dict[str, Callable[[dict, Any], Any]] = {
        "teacher": lambda batch, mask: teacher(**batch).logits,
        "full_depth": lambda batch, mask: model(**batch).logits,
    }
    for k in sorted({entry["fixed_k"] for entry in settings.values()}):
        if k < N:
            configs[f"fixed_k={k}"] = lambda batch, mask, k=k: exits.fixed_depth_logits(model, batch, k)
    rules = {}
    for epsilon, entry in settings.items():
        threshold = entry["threshold"]
        rules[epsilon] = exits.ExitRule("full") if threshold is None else exits.ExitRule(
            "confidence", threshold=threshold, tolerance=report["tolerance"])
        configs[f"adaptive@{epsilon}"] = lambda batch, mask, r=rules[epsilon]: exits.run_exits(
            model, kind, batch, mask, r, target_scale, shrink=True)
        configs[f"adaptive_naive@{epsilon}"] = lambda batch, mask, r=rules[epsilon]: exits.run_exits(
            model, kind, batch, mask, r, target_scale, shrink=False)

    one = features[:examples]
    singles = [inputs([f]) for f in one]
    latency: dict[str, list[float]] = {name: [] for name in configs if not name.startswith("adaptive_naive")}
    names = list(latency)
    with torch.no_grad():
        for batch, mask in singles[:3]:  # warm-up
            for name in names:
                configs[name](batch, mask)
        for i, (batch, mask) in enumerate(singles):
            for j in range(len(names)):  # a rotating order: no configuration always runs first
                name = names[(i + j) % len(names)]
                start = time.perf_counter()
                configs[name](batch, mask)
                latency[name].append((time.perf_counter() - start) * 1e3)
        many = features[:max(examples, 4 * batch_size)]
        batches = [inputs(many[s:s + batch_size]) for s in range(0, len(many), batch_size)]
        throughput: dict[str, list[float]] = {name: [] for name in configs}
        for r in range(repeats):
            order = list(configs)
            random.Random(seed + r).shuffle(order)
            for name in order:
                start = time.perf_counter()
                for batch, mask in batches:
                    configs[name](batch, mask)
                throughput[name].append(len(many) / (time.perf_counter() - start))
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "report_split": report["report_split"],
                           "batch1_examples": len(one), "batch_size": batch_size, "batched_examples": len(many),
                           "repeats": repeats, "num_recursions": N, "configs": {}}
    for name in configs:
        entry: dict[str, Any] = {"throughput": statistics.median(throughput[name])}
        if name in latency:
            values = latency[name]
            entry["latency_ms"] = {"mean": statistics.fmean(values), "p50": _percentile(values, 0.5),
                                   "p95": _percentile(values, 0.95)}
        out["configs"][name] = entry
    return out


# --------------------------------------------------------------------------------------------
# exits.csv and the plots
# --------------------------------------------------------------------------------------------
def _teacher_score(metrics_files: list[str], split: str) -> float | None:
    values = []
    for path in metrics_files:
        metrics = read_json(path)
        scores = metrics.get("test" if split.startswith("test") else "dev") or {}
        if metrics["main_metric"] in scores:
            values.append(float(scores[metrics["main_metric"]]))
    return statistics.fmean(values) if values else None


def summarise(runs: list[dict], output_csv: str | Path, plot_dir: str | Path, tasks: list[str]) -> "Any":
    """`runs`: {model, label, task, mode, run_dir, teacher_runs} per run with exits -> exits.csv
    (one row per model, task, mode and epsilon: means over the runs) and
    score_vs_latency_<task>.png per task."""
    import pandas as pd

    rows = []
    for run in runs:
        report = read_json(Path(run["run_dir"]) / "exits.json")
        timing = read_json(Path(run["run_dir"]) / "timing.json")["configs"]
        full = timing["full_depth"]
        teacher = timing["teacher"]
        teacher_score = _teacher_score(run["teacher_runs"], report["report_split"])
        for epsilon, entry in report["epsilons"].items():
            adaptive, naive = timing[f"adaptive@{epsilon}"], timing[f"adaptive_naive@{epsilon}"]
            fixed = timing.get(f"fixed_k={entry['fixed_k']}", full)
            rows.append({
                "model": run["model"], "label": run.get("label", run["model"]), "task": run["task"],
                "mode": run["mode"], "epsilon": float(epsilon), "loss": report["loss"], "heads": report["heads"],
                "calibration_split": report["calibration_split"], "report_split": report["report_split"],
                "threshold": entry["threshold"], "calibration_agreement": entry["calibration_agreement"],
                "agreement": entry["test_agreement"], "score": 100 * entry["score"],
                "full_depth_score": 100 * report["full_depth"]["score"],
                "score_delta": 100 * (entry["score"] - report["full_depth"]["score"]),
                "fixed_k": entry["fixed_k"], "fixed_k_score": 100 * entry["fixed_k_score"],
                "teacher_score": None if teacher_score is None else 100 * teacher_score,
                "mean_recursions": entry["mean_recursions"], "num_recursions": report["full_depth"]["mean_recursions"],
                "latency_ms": adaptive["latency_ms"]["mean"], "latency_p95_ms": adaptive["latency_ms"]["p95"],
                "full_latency_ms": full["latency_ms"]["mean"], "fixed_k_latency_ms": fixed["latency_ms"]["mean"],
                "teacher_latency_ms": teacher["latency_ms"]["mean"],
                "latency_vs_full": adaptive["latency_ms"]["mean"] / full["latency_ms"]["mean"],
                "latency_vs_fixed_k": adaptive["latency_ms"]["mean"] / fixed["latency_ms"]["mean"],
                "latency_vs_teacher": adaptive["latency_ms"]["mean"] / teacher["latency_ms"]["mean"],
                "throughput_shrink_vs_full": adaptive["throughput"] / full["throughput"],
                "throughput_naive_vs_full": naive["throughput"] / full["throughput"],
                "throughput_fixed_k_vs_full": fixed["throughput"] / full["throughput"],
                "throughput_vs_teacher": adaptive["throughput"] / teacher["throughput"],
                "exit_histogram": " ".join(str(c) for c in entry["exit_histogram"]),
            })
    columns = ["model", "label", "task", "mode", "epsilon", "loss", "heads"]
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=columns)
    else:
        keep = {c: "first" for c in ("label", "loss", "heads", "calibration_split", "report_split", "exit_histogram",
                                     "fixed_k", "num_recursions")}
        numeric = [c for c in frame.columns if c not in columns and c not in keep]
        frame = (frame.groupby(["model", "task", "mode", "epsilon"], sort=False)
                 .agg({**keep, **{c: "mean" for c in numeric}}).reset_index())
        frame.insert(len(frame.columns), "runs", pd.DataFrame(rows).groupby(
            ["model", "task", "mode", "epsilon"], sort=False).size().values)
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    partial = output_csv.with_name(f".{output_csv.name}.partial")
    frame.to_csv(partial, index=False, float_format="%.4f")
    for task in tasks:
        plot_score_vs_latency(frame[frame["task"] == task] if not frame.empty else frame, task,
                              Path(plot_dir) / f"score_vs_latency_{task}.png")
    partial.replace(output_csv)  # last: the table is complete once the plots are too
    return frame


def plot_score_vs_latency(frame, task: str, path: Path) -> Path:
    """Task score against batch-1 latency: the teacher, each (model, mode) at full depth, cut to
    fixed k and adaptive at each epsilon."""
    from minialbert.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    if not frame.empty:
        first = frame.iloc[0]
        if first["teacher_score"] == first["teacher_score"]:  # not NaN
            ax.scatter([first["teacher_latency_ms"]], [first["teacher_score"]], marker="*", s=160, c="black",
                       label="teacher")
        for (model, mode), group in frame.groupby(["model", "mode"], sort=False):
            group = group.sort_values("epsilon")
            line = ax.plot(group["latency_ms"], group["score"], marker="o", label=f"{group.iloc[0]['label']} "
                                                                                  f"({mode}, adaptive)")[0]
            colour = line.get_color()
            ax.scatter([group.iloc[0]["full_latency_ms"]], [group.iloc[0]["full_depth_score"]], marker="s",
                       color=colour, label=f"  full depth")
            ax.scatter(group["fixed_k_latency_ms"], group["fixed_k_score"], marker="x", color=colour,
                       label="  fixed k")
            for _, row in group.iterrows():
                ax.annotate(f"ε={row['epsilon']:g}", (row["latency_ms"], row["score"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ax.set_xlabel("batch-1 latency (ms, 1 thread)")
    ax.set_ylabel(f"{task} score (x100)")
    ax.set_title(f"{task}: score against latency")
    ax.legend(fontsize=6, loc="best")
    return _save(fig, path)
