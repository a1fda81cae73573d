"""Task metrics, computed through `evaluate` with the metric modules shipped in
`minialbert/metric_modules/` (loaded from a local path: the hub is unreachable offline).

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


def compute_metric(
    name: str, config_name: str | None, predictions: Sequence[Any], references: Sequence[Any], **kwargs
) -> dict[str, float]:
    """Compute one shipped metric; returns a flat {metric: float} dict."""
    result = load_metric(name, config_name).compute(predictions=list(predictions), references=list(references), **kwargs)
    return {key: float(value) for key, value in result.items()}


def glue_metrics(task: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """GLUE metrics of one task (`cola`, `sst2`, `mrpc`, `stsb`, ...; or `classification`/`regression`)."""
    return compute_metric("glue", task, predictions, references)


def seqeval_metrics(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], **kwargs
) -> dict[str, float]:
    """Entity-level precision/recall/F1 (and token accuracy) of IOB tag sequences."""
    return compute_metric("seqeval", None, predictions, references, **kwargs)
