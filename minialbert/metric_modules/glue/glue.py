"""GLUE metrics as an `evaluate` module, shipped with minialbert (the hub is unreachable).

Load with `evaluate.load("<path>/metric_modules/glue", config_name)`. The config name is a GLUE
task (cola, sst2, mrpc, stsb, qqp, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, ax)
or a generic one for custom tasks: `classification` (accuracy, macro F1, Matthews) and
`regression` (Pearson, Spearman).
"""

import datasets
import evaluate
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_DESCRIPTION = "GLUE task metrics: Matthews correlation, accuracy, F1, Pearson and Spearman correlation."

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR}, year={2019}}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted label ids (int), or scores (float) for stsb / regression.
    references: gold label ids (int), or gold scores (float) for stsb / regression.
Returns: a dict of floats, depending on the config:
    cola: matthews_correlation; mrpc, qqp: accuracy and f1 (positive class = 1);
    stsb, regression: pearson and spearmanr; classification: accuracy, f1_macro and
    matthews_correlation; the other tasks: accuracy.
"""

ACCURACY_TASKS = ("sst2", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "hans", "ax")
REGRESSION_CONFIGS = ("stsb", "regression")
ALL_CONFIGS = ACCURACY_TASKS + REGRESSION_CONFIGS + ("cola", "mrpc", "qqp", "classification")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Glue(evaluate.Metric):
    """GLUE metrics for one task (the config name)."""

    def _info(self):
        if self.config_name not in ALL_CONFIGS:
            raise KeyError(f"glue metric: unknown config {self.config_name!r}; expected one of {list(ALL_CONFIGS)}")
        dtype = "float32" if self.config_name in REGRESSION_CONFIGS else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}),
            format="numpy",
        )

    def _compute(self, predictions, references):
        name = self.config_name
        if name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if name in REGRESSION_CONFIGS:
            return {
                "pearson": float(pearsonr(references, predictions)[0]),
                "spearmanr": float(spearmanr(references, predictions)[0]),
            }
        if name in ("mrpc", "qqp"):
            return {
                "accuracy": float(accuracy_score(references, predictions)),
                "f1": float(f1_score(references, predictions)),
            }
        if name == "classification":
            return {
                "accuracy": float(accuracy_score(references, predictions)),
                "f1_macro": float(f1_score(references, predictions, average="macro")),
                "matthews_correlation": float(matthews_corrcoef(references, predictions)),
            }
        return {"accuracy": float(accuracy_score(references, predictions))}
