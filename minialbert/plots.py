"""The summary figures: score against unique parameters, per-task scores, training curves.

Every figure names models through a legend (one colour per model, one marker per tuning
mode), never through text placed next to points, so no two labels can overlap however close
the models' scores are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Mapping

from minialbert.flops import PERF_FIELDS
from minialbert.loss_terms import LOSS_TERMS

MODE_MARKERS = {"full": "o", "adapter": "^"}
MODE_HATCH = {"full": "", "adapter": "//"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_colours(labels: Iterable[str]) -> dict[str, tuple]:
    """One colour per model label, in the given order: pass the same mapping to every figure."""
    labels = list(dict.fromkeys(labels))
    cmap = _pyplot().get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _colours(labels: Iterable[str], given: Mapping[str, tuple] | None = None) -> dict[str, tuple]:
    labels = list(dict.fromkeys(labels))
    if given and all(label in given for label in labels):
        return {label: given[label] for label in labels}
    return model_colours(labels)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_scores(table, path: str | Path, colours: Mapping[str, tuple] | None = None) -> Path:
    """Average score against unique parameters (log x): colour = model, marker = tuning mode."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    table = table.dropna(subset=["average", "unique_params"])
    colours = _colours(table["label"], colours)
    for _, r in table.iterrows():
        ax.scatter(r["unique_params"], r["average"], color=colours[r["label"]], s=70, edgecolors="black",
                   linewidths=0.5, marker=MODE_MARKERS.get(r["mode"], "s"), zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("unique parameters (encoder)")
    ax.set_ylabel("average score (x100)")
    ax.set_title("Average score vs. unique parameters")
    ax.grid(True, which="both", alpha=0.3)
    models = [plt.Line2D([], [], color=c, marker="s", linestyle="", markersize=8, label=label)
              for label, c in colours.items()]
    modes = [plt.Line2D([], [], color="grey", marker=MODE_MARKERS[m], linestyle="", markersize=8,
                        label=f"{m} {'fine-tuning' if m == 'full' else 'tuning'}")
             for m in MODE_MARKERS if m in set(table["mode"])]
    spacer = plt.Line2D([], [], linestyle="", label=" ")
    fig.legend(handles=[*models, spacer, *modes], fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 0.95),
               frameon=False, title="model / mode", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_task_scores(summary, path: str | Path, tasks: Iterable[str] | None = None,
                     colours: Mapping[str, tuple] | None = None) -> Path:
    """One panel per task: each model's score (x100, mean over seeds at the chosen lr, with its
    std), full fine-tuning and adapter tuning side by side."""
    plt = _pyplot()
    order = [t for t in (tasks or []) if t in set(summary["task"])]
    order += [t for t in dict.fromkeys(summary["task"]) if t not in order]
    labels = [label for label in (colours or {}) if label in set(summary["label"])]
    labels += [label for label in dict.fromkeys(summary["label"]) if label not in labels]
    colours = _colours(labels, colours)
    ncols = min(2, len(order))
    nrows = math.ceil(len(order) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 0.45 * len(labels) * 2 + 1.2 * nrows + 0.6),
                             squeeze=False)
    height = 0.38
    for ax, task in zip(axes.flat, order):
        part = summary[summary["task"] == task]
        for i, label in enumerate(labels):
            for j, mode in enumerate(("full", "adapter")):
                row = part[(part["label"] == label) & (part["mode"] == mode)]
                if row.empty:
                    continue
                score, std = 100 * float(row["score"].iloc[0]), 100 * float(row["score_std"].iloc[0] or 0)
                y = i + (j - 0.5) * height
                ax.barh(y, score, height=height, color=colours[label], hatch=MODE_HATCH[mode], edgecolor="black",
                        linewidth=0.4, xerr=std if std == std else None, error_kw={"elinewidth": 0.8})
        metric = part["main_metric"].iloc[0]
        ax.set_title(f"{task} ({metric}, {part['report_split'].iloc[0]})", fontsize=9)
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel("score (x100)", fontsize=8)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch=MODE_HATCH[m],
                             label=f"{m} {'fine-tuning' if m == 'full' else 'tuning'}") for m in MODE_HATCH]
    fig.legend(handles=handles, loc="upper center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.suptitle("Scores per task (bars: mean over seeds at the lr chosen on dev; whiskers: std)", fontsize=10,
                 y=1.04)
    fig.tight_layout()
    return _save(fig, path)


def read_train_log(path: str | Path) -> list[dict]:
    """The step records of a train_log.jsonl (resume events skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if "step" in record and "event" not in record:
                records.append(record)
    return records


def loss_panels(logs: Iterable[list[dict]]) -> list[str]:
    """The loss components the records carry, one panel each: the loss-term table's order, then
    the total, then anything else the loop logged (step, epoch, lr and counters left out)."""
    keys = {k for records in logs for r in records for k in r}
    components = [c for c in (*LOSS_TERMS, "total") if c in keys]
    counters = {"step", "epoch", "lr", "tokens_seen", "elapsed_seconds", *PERF_FIELDS}
    return components + sorted(keys - set(components) - counters)


def plot_loss_curves(train_logs: Mapping[str, str | Path], path: str | Path,
                     labels: Mapping[str, str] | None = None, colours: Mapping[str, tuple] | None = None) -> Path:
    """Each loss component against step, one panel per component, one line per trained model
    (teacher pretraining and every distillation); log y where a component spans a decade."""
    plt = _pyplot()
    logs = {name: read_train_log(p) for name, p in train_logs.items()}
    logs = {name: records for name, records in logs.items() if records}
    components = loss_panels(logs.values())
    if not logs:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no model was trained by this workflow (teachers and baselines only)", ha="center")
        return _save(fig, path)
    names = {n: (labels or {}).get(n, n) for n in logs}
    colours = _colours(names.values(), colours)
    ncols = min(3, max(1, len(components)))
    nrows = max(1, math.ceil(len(components) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax, component in zip(axes.flat, components):
        values = []
        for name, records in logs.items():
            points = [(r["step"], r[component]) for r in records if component in r and r[component] is not None]
            points = [(s, v) for s, v in points if v > 0 or component != "total"]
            if not points or all(v == 0 for _, v in points):
                continue
            steps, vals = zip(*points)
            values += vals
            ax.plot(steps, vals, color=colours[names[name]], label=names[name], linewidth=1.4)
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 10:
            ax.set_yscale("log")
        ax.set_title(component, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(components):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, linewidth=2, label=label) for label, c in colours.items()]
    fig.legend(handles=handles, loc="upper center", ncol=min(4, len(handles)), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.03 * math.ceil(len(handles) / 4)))
    fig.suptitle("Training losses (train_log.jsonl, mean over each logging interval)", fontsize=10,
                 y=1.02 + 0.05 * math.ceil(len(handles) / 4))
    fig.tight_layout()
    return _save(fig, path)
