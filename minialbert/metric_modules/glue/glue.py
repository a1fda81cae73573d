"""GLUE metrics as an `evaluate` module, shipped with minialbert (the hub is unreachable).

Load with `evaluate.load("<path>/metric_modules/glue", config_name)`. The config name is a GLUE
task (cola, sst2, mrpc, stsb, qqp, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, ax)
or a generic one for custom tasks: `classification` (accuracy, macro F1, Matthews) and
`regression` (Pearson, Spearman).
"""

import datasets
import evaluate

from minialbert.metrics import GLUE_CONFIGS as ALL_CONFIGS
from minialbert.metrics import REGRESSION_CONFIGS, glue_scores

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
        return glue_scores(self.config_name, predictions, references)
