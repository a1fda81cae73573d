"""Task metrics. The computations live here, in plain numpy (and seqeval for NER), so a
fine-tuning job does not pay for importing `evaluate`; the `evaluate` modules shipped in
`minialbert/metric_modules/` (loadable from a local path: the hub is unreachable offline)
delegate to these functions, so both give the same numbers.

- `glue`: per GLUE task (Matthews, accuracy, F1, Pearson/Spearman) plus generic
  `classification` / `regression` configs for custom tasks;
- `seqeval`: entity-level precision/recall/F1 of IOB tag sequences.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
METRIC_MODULES = ("glue", "seqeval")


def metric_module_path(name: str) -> Path:
    """Local path of a shipped metric module directory (what `evaluate.load` is given)."""
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric module {name!r}; shipped modules: {list(METRIC_MODULES)}")
    return METRIC_MODULES_DIR / name


@functools.lru_cache(maxsize=None)
def load_metric(name: str, config_name: str | None = None):
    """`evaluate.load` a shipped module by name; cached because loading copies the module file."""
    import evaluate

    return evaluate.load(str(metric_module_path(name)), config_name)


ACCURACY_TASKS = ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans", "ax")
REGRESSION_CONFIGS = ("stsb", "regression")
GLUE_CONFIGS = ACCURACY_TASKS + REGRESSION_CONFIGS + ("cola", "mrpc", "qqp", "classification")


def _accuracy(gold, pred) -> float:
    return float((gold == pred).mean())


def _f1(gold, pred, positive) -> float:
    tp = float(((pred == positive) & (gold == positive)).sum())
    predicted, actual = float((pred == positive).sum()), float((gold == positive).sum())
    return 0.0 if tp == 0 else 2 * tp / (predicted + actual)


def _matthews(gold, pred) -> float:
    """Multi-class Matthews correlation (Gorodkin 2004), as sklearn computes it."""
    import numpy as np

    labels = np.union1d(gold, pred)
    confusion = np.array([[np.sum((gold == a) & (pred == b)) for b in labels] for a in labels], dtype=np.float64)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denominator == 0 else float((c * s - t @ p) / denominator)


def _ranks(x):
    """Average ranks (ties share the mean of their positions), as scipy.stats.rankdata."""
    import numpy as np

    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    group = np.cumsum(starts) - 1
    bounds = np.r_[np.flatnonzero(starts), len(x)]
    mean_rank = (bounds[:-1] + bounds[1:] - 1) / 2.0 + 1
    ranks = np.empty(len(x))
    ranks[order] = mean_rank[group]
    return ranks


def _pearson(a, b) -> float:
    import numpy as np

    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float("nan") if denominator == 0 else float((a * b).sum() / denominator)


def glue_scores(config: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """GLUE metrics of one task config, computed directly (numpy): the same numbers as the shipped
    `evaluate` module (which delegates here) without importing evaluate, sklearn or scipy."""
    import numpy as np

    if config not in GLUE_CONFIGS:
        raise KeyError(f"glue metric: unknown config {config!r}; expected one of {list(GLUE_CONFIGS)}")
    pred, gold = np.asarray(predictions), np.asarray(references)
    if len(pred) != len(gold):
        raise ValueError(f"glue metric: {len(pred)} predictions but {len(gold)} references")
    if config in REGRESSION_CONFIGS:
        pred, gold = pred.astype(np.float64), gold.astype(np.float64)
        return {"pearson": _pearson(gold, pred), "spearmanr": _pearson(_ranks(gold), _ranks(pred))}
    if config == "cola":
        return {"matthews_correlation": _matthews(gold, pred)}
    if config in ("mrpc", "qqp"):
        return {"accuracy": _accuracy(gold, pred), "f1": _f1(gold, pred, positive=1)}
    if config == "classification":
        labels = np.union1d(gold, pred)
        return {"accuracy": _accuracy(gold, pred),
                "f1_macro": float(np.mean([_f1(gold, pred, positive=c) for c in labels])),
                "matthews_correlation": _matthews(gold, pred)}
    return {"accuracy": _accuracy(gold, pred)}


def seqeval_scores(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], mode: str | None = None,
                   scheme: str = "IOB2", zero_division: int = 0) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 and token accuracy through seqeval."""
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

    for i, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise ValueError(f"seqeval: sentence {i} has {len(pred)} predicted tags but {len(ref)} gold tags")
    kwargs: dict[str, Any] = {"zero_division": zero_division}
    if mode == "strict":
        from seqeval import scheme as schemes

        kwargs.update(mode="strict", scheme=getattr(schemes, scheme))
    references, predictions = [list(r) for r in references], [list(p) for p in predictions]
    return {
        "precision": float(precision_score(references, predictions, **kwargs)),
        "recall": float(recall_score(references, predictions, **kwargs)),
        "f1": float(f1_score(references, predictions, **kwargs)),
        "accuracy": float(accuracy_score(references, predictions)),
    }


def compute_metric(
    name: str, config_name: str | None, predictions: Sequence[Any], references: Sequence[Any], **kwargs
) -> dict[str, float]:
    """Compute one shipped metric directly (no `evaluate` import: it costs seconds per job);
    `load_metric(name, config_name).compute(...)` gives the same numbers."""
    if name == "glue":
        return glue_scores(config_name, predictions, references)
    if name == "seqeval":
        return seqeval_scores(predictions, references, **kwargs)
    metric_module_path(name)  # raises for an unknown name
    raise AssertionError(name)


def glue_metrics(task: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """GLUE metrics of one task (`cola`, `sst2`, `mrpc`, `stsb`, ...; or `classification`/`regression`)."""
    return compute_metric("glue", task, predictions, references)


def seqeval_metrics(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], **kwargs
) -> dict[str, float]:
    """Entity-level precision/recall/F1 (and token accuracy) of IOB tag sequences."""
    return compute_metric("seqeval", None, predictions, references, **kwargs)
