"""Results: collect fine-tuning runs into tables, measure model efficiency, draw the plot.

Outputs (written by `aggregate`, all under one directory):
- runs.csv        one row per fine-tuning run (model, task, mode, lr, seed, every dev/test metric,
                  parameter counts, timings, config hashes and the run's resolved config)
- summary.csv     one row per (model, mode, task): the lr chosen on dev by the mean over seeds,
                  mean and std (sample std, ddof=1; empty for a single run) of the main metric
                  on dev and on test, number of runs
- table.csv       paper style: one row per (model, mode), one column per task (the main metric
                  of the chosen lr on the task's report split, x100), one average per task
                  group (e.g. GLUE, NER), the overall average, unique and trainable parameters
- efficiency.csv  one row per model: total/unique parameters, CPU latency and throughput
- score_vs_params.png  average score against unique parameters

CLI: `minialbert aggregate --results results` and `minialbert efficiency --model DIR --output FILE`
(both subcommands are served by this module).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from minialbert.utils import ConfigError, canonical_json, read_json, write_json_atomic

KIND_ORDER = {"teacher": 0, "baseline": 1, "student": 2}


# --------------------------------------------------------------------------- runs


def _flatten(prefix: str, scores: Any) -> dict[str, float]:
    """{'accuracy': .9} -> {'dev_accuracy': .9}; MNLI's nested dicts -> dev_matched_accuracy."""
    out: dict[str, float] = {}
    if not isinstance(scores, dict):
        return out
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update(_flatten(f"{prefix}_{key}", value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}_{key}"] = float(value)
    return out


def _test_main_value(metrics: dict) -> float | None:
    """The main metric on the test split (None when the test split has no labels)."""
    test, name = metrics.get("test"), metrics.get("main_metric")
    if not isinstance(test, dict) or not name:
        return None
    if name in test and isinstance(test[name], (int, float)):
        return float(test[name])
    for value in test.values():  # MNLI-style nesting: the first (matched) set
        if isinstance(value, dict) and isinstance(value.get(name), (int, float)):
            return float(value[name])
    return None


def load_run(path: str | Path) -> dict:
    """One runs.csv row from a fine-tuning run's metrics.json."""
    metrics = read_json(path, "fine-tuning metrics.json")
    for field in ("model", "task", "mode", "lr", "seed", "main_metric", "main_value"):
        if field not in metrics:
            raise ConfigError(f"{path}: metrics.json has no '{field}'")
    wf = metrics.get("workflow") or {}
    row = {
        "model": metrics["model"],
        "task": metrics["task"],
        "task_type": metrics.get("task_type"),
        "mode": metrics["mode"],
        "lr": float(metrics["lr"]),
        "seed": int(metrics["seed"]),
        "main_metric": metrics["main_metric"],
        "main_value": float(metrics["main_value"]),
        "test_main_value": _test_main_value(metrics),
        "epochs": metrics.get("epochs"),
        "batch_size": metrics.get("batch_size"),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "unique_params": metrics.get("unique_params"),
        "train_seconds": metrics.get("train_seconds"),
        "eval_seconds": metrics.get("eval_seconds"),
        "train_examples_per_second": metrics.get("train_examples_per_second"),
        "eval_examples_per_second": metrics.get("eval_examples_per_second"),
        "config_hash": metrics.get("config_hash"),
        "model_dir": metrics.get("model_dir"),
        "model_identity": wf.get("model_identity"),
        "task_identity": wf.get("task_identity"),
        "path": str(path),
    }
    legacy = wf.get("job_config") or {}  # metrics.json of earlier versions named the model by its dir
    if "model_dir" not in metrics and legacy.get("model"):
        row.update(model=legacy["model"], model_dir=metrics["model"])
    row.update(_flatten("dev", metrics.get("dev")))
    row.update(_flatten("test", metrics.get("test")))
    row["run_config"] = canonical_json(metrics.get("config") or {})
    return row


def runs_frame(run_files: Iterable[str | Path], models: dict | None = None, tasks: dict | None = None):
    """runs.csv as a DataFrame, with model label/kind and task group joined in."""
    import pandas as pd

    rows = [load_run(p) for p in run_files]
    if not rows:
        raise ConfigError("no fine-tuning runs to aggregate (no metrics.json files given)")
    df = pd.DataFrame(rows)
    models, tasks = models or {}, tasks or {}
    df.insert(1, "label", [models.get(m, {}).get("label", m) for m in df["model"]])
    df.insert(2, "kind", [models.get(m, {}).get("kind", "model") for m in df["model"]])
    df.insert(4, "group", [tasks.get(t, {}).get("group", "tasks") for t in df["task"]])
    df.insert(5, "report_split", [tasks.get(t, {}).get("report_split", "dev") for t in df["task"]])
    return df.sort_values(["model", "task", "mode", "lr", "seed"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- summary and table


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else math.nan)


def summarise(runs) -> "pd.DataFrame":  # noqa: F821
    """Per (model, mode, task): the lr with the best dev mean over seeds, and its statistics."""
    import pandas as pd

    rows = []
    for (model, mode, task), group in runs.groupby(["model", "mode", "task"], sort=False):
        by_lr = {lr: g for lr, g in group.groupby("lr")}
        dev_means = {lr: _mean_std(list(g["main_value"]))[0] for lr, g in by_lr.items()}
        # best dev mean; ties go to the smaller lr so the choice is deterministic
        best_lr = max(sorted(dev_means), key=lambda lr: (dev_means[lr], -lr))
        chosen = by_lr[best_lr]
        dev_mean, dev_std = _mean_std(list(chosen["main_value"]))
        test_mean, test_std = _mean_std([v for v in chosen["test_main_value"] if v is not None])
        split = chosen["report_split"].iloc[0]
        score, score_std = (test_mean, test_std) if split == "test" else (dev_mean, dev_std)
        rows.append(
            {
                "model": model,
                "label": chosen["label"].iloc[0],
                "kind": chosen["kind"].iloc[0],
                "mode": mode,
                "task": task,
                "group": chosen["group"].iloc[0],
                "main_metric": chosen["main_metric"].iloc[0],
                "lr": best_lr,
                "n_runs": len(chosen),
                "dev_mean": dev_mean,
                "dev_std": dev_std,
                "test_mean": test_mean,
                "test_std": test_std,
                "report_split": split,
                "score": score,
                "score_std": score_std,
                "dev_mean_by_lr": canonical_json({format(lr, "g"): dev_means[lr] for lr in sorted(dev_means)}),
                "trainable_params": _median(chosen["trainable_params"]),
                "unique_params": _median(chosen["unique_params"]),
            }
        )
    return pd.DataFrame(rows)


def _median(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def _model_order(names: Iterable[str], kinds: dict[str, str], models: dict | None) -> list[str]:
    config_order = {m: i for i, m in enumerate(models or {})}
    return sorted(dict.fromkeys(names), key=lambda m: (KIND_ORDER.get(kinds.get(m), 3), config_order.get(m, 1e9), m))


def paper_table(summary, efficiency=None, models: dict | None = None, tasks: dict | None = None):
    """One row per (model, mode), one column per task (x100), averages per task group and overall."""
    import pandas as pd

    task_order = [t for t in (tasks or {}) if t in set(summary["task"])]
    task_order += sorted(set(summary["task"]) - set(task_order))
    groups: dict[str, list[str]] = {}
    for t in task_order:
        groups.setdefault(summary.loc[summary["task"] == t, "group"].iloc[0], []).append(t)
    kinds = dict(zip(summary["model"], summary["kind"]))
    unique_by_model = {}
    if efficiency is not None and len(efficiency):
        unique_by_model = dict(zip(efficiency["model"], efficiency["unique_params"]))
    rows = []
    for model in _model_order(summary["model"], kinds, models):
        for mode in ("full", "adapter"):
            part = summary[(summary["model"] == model) & (summary["mode"] == mode)]
            if part.empty:
                continue
            scores = {t: 100.0 * float(s) for t, s in zip(part["task"], part["score"])}
            row = {"model": model, "label": part["label"].iloc[0], "kind": kinds[model], "mode": mode}
            row.update({t: _round(scores.get(t, math.nan)) for t in task_order})
            for g, members in groups.items():
                if len(groups) > 1 or len(members) > 1:
                    row[f"avg_{g}"] = _round(_nanless_mean([scores.get(t, math.nan) for t in members]))
            row["average"] = _round(_nanless_mean([scores.get(t, math.nan) for t in task_order]))
            row["unique_params"] = unique_by_model.get(model, _median(part["unique_params"]))
            row["trainable_params"] = _median(part["trainable_params"])
            rows.append(row)
    return pd.DataFrame(rows)


def _nanless_mean(values: list[float]) -> float:
    """Mean, or NaN if any value is missing: an average over fewer tasks would mislead."""
    if not values or any(v is None or math.isnan(v) for v in values):
        return math.nan
    return statistics.fmean(values)


def _round(x: float) -> float:
    return round(x, 2) if not math.isnan(x) else x


# --------------------------------------------------------------------------- efficiency


def measure_efficiency(model_dir: str | Path, settings: "EfficiencyConfig | None" = None) -> dict:  # noqa: F821
    """Encoder forward latency on CPU at a fixed shape (median of `repeats`) and parameter counts."""
    import torch
    from transformers import AutoConfig, AutoModel

    import minialbert  # noqa: F401  (registers the minialbert model type)
    from minialbert.command_configs import EfficiencyConfig

    s = settings or EfficiencyConfig()
    batch_size, max_length, repeats, warmup, threads = s.batch_size, s.max_length, s.repeats, s.warmup_repeats, s.threads
    from minialbert.adapters import count_parameters

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{model_dir}: not a model dir (no config.json)")
    torch.set_num_threads(threads)
    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    max_positions = getattr(config, "max_position_embeddings", max_length) or max_length
    length = min(max_length, max_positions)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, config.vocab_size, (batch_size, length), generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if getattr(config, "type_vocab_size", 0):
        inputs["token_type_ids"] = torch.zeros_like(input_ids)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            model(**inputs)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    counts = count_parameters(model)
    return {
        "model_dir": str(model_dir),
        "model_type": config.model_type,
        "total_params": int(counts["total"]),
        "unique_params": int(counts["unique"]),
        "batch_size": batch_size,
        "max_length": length,
        "threads": threads,
        "repeats": repeats,
        "latency_ms": 1000.0 * latency,
        "latency_ms_min": 1000.0 * min(times),
        "throughput_examples_per_second": batch_size / latency,
        "torch_version": torch.__version__,
    }


def efficiency_frame(efficiency_files: Iterable[str | Path], models: dict | None = None):
    import pandas as pd

    rows = []
    for path in efficiency_files:
        data = read_json(path, "efficiency JSON")
        model = data.get("model") or Path(path).stem
        if "seq_len" in data and "max_length" not in data:  # efficiency JSON of earlier versions
            data["max_length"] = data.pop("seq_len")
        info = (models or {}).get(model, {})
        rows.append({"model": model, "label": info.get("label", model), "kind": info.get("kind", "model"), **data})
    columns = ["model", "label", "kind", "total_params", "unique_params", "batch_size", "max_length", "threads",
               "latency_ms", "latency_ms_min", "throughput_examples_per_second", "model_type", "torch_version"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=columns)
    return df[[c for c in columns if c in df.columns]]


# --------------------------------------------------------------------------- plot


# --------------------------------------------------------------------------- everything


def aggregate(
    run_files: Iterable[str | Path],
    efficiency_files: Iterable[str | Path],
    output_dir: str | Path,
    models: dict | None = None,
    tasks: dict | None = None,
    train_logs: dict[str, str | Path] | None = None,
) -> dict[str, Path]:
    """Write runs.csv, summary.csv, table.csv, efficiency.csv and the figures: score_vs_params.png,
    task_scores.png and loss_curves.png (from the trained models' train_log.jsonl files)."""
    from minialbert import plots

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    runs = runs_frame(run_files, models, tasks)
    summary = summarise(runs)
    efficiency = efficiency_frame(efficiency_files, models)
    table = paper_table(summary, efficiency, models, tasks)
    paths = {name: output_dir / f"{name}.csv" for name in ("runs", "summary", "table", "efficiency")}
    runs.to_csv(paths["runs"], index=False)
    summary.to_csv(paths["summary"], index=False, float_format="%.6g")
    table.to_csv(paths["table"], index=False)
    efficiency.to_csv(paths["efficiency"], index=False, float_format="%.6g")
    labels = {n: m.get("label", n) for n, m in (models or {}).items()}
    colours = plots.model_colours([*table["label"], *labels.values()])  # one colour per model in every figure
    paths["plot"] = plots.plot_scores(table, output_dir / "score_vs_params.png", colours)
    paths["task_plot"] = plots.plot_task_scores(summary, output_dir / "task_scores.png", tasks, colours)
    paths["loss_plot"] = plots.plot_loss_curves(train_logs or {}, output_dir / "loss_curves.png", labels, colours)
    return paths


# --------------------------------------------------------------------------- CLI (aggregate, efficiency)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    if parser.prog.endswith("efficiency"):
        parser.add_argument("--model", required=True, help="model dir (save_pretrained layout)")
        parser.add_argument("--output", required=True, help="JSON file to write")
        from minialbert.command_configs import add_config_arguments
        from minialbert.command_configs import EfficiencyConfig

        add_config_arguments(parser, EfficiencyConfig)
        parser.add_argument("--name", help="model name recorded in the JSON (default: the output file's stem)")
    else:
        parser.add_argument("--results", default="results",
                            help="workflow results dir: reads finetune/**/metrics.json and efficiency/*.json")
        parser.add_argument("--output-dir", help="default: RESULTS/summary")
        parser.add_argument("--meta", help="JSON file {models: {name: {label, kind}}, tasks: {name: {group, report_split}}}")


def run(args: argparse.Namespace) -> int:
    if args.command == "efficiency":
        from minialbert.command_configs import config_from_args
        from minialbert.command_configs import EfficiencyConfig

        result = measure_efficiency(args.model, config_from_args(EfficiencyConfig, args))
        result = {"model": args.name or Path(args.output).stem, **result}
        write_json_atomic(args.output, result)
        print(json.dumps(result))
        return 0
    results = Path(args.results)
    run_files = sorted(results.glob("finetune/**/metrics.json"))
    meta = read_json(args.meta, "meta JSON") if args.meta else {}
    train_logs = {p.parent.name: p for p in sorted(results.glob("*/*/train_log.jsonl"))}
    paths = aggregate(run_files, sorted(results.glob("efficiency/*.json")), args.output_dir or results / "summary",
                      meta.get("models"), meta.get("tasks"), train_logs)
    print(f"aggregated {len(run_files)} runs: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
