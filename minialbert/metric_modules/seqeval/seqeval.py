"""Entity-level sequence labelling metrics (seqeval) as an `evaluate` module, shipped with
minialbert (the hub is unreachable). Load with `evaluate.load("<path>/metric_modules/seqeval")`.
"""

import datasets
import evaluate

from minialbert.metrics import seqeval_scores

_DESCRIPTION = "Entity-level precision, recall and F1 of IOB-tagged sequences (seqeval), plus token accuracy."

_CITATION = """\
@misc{seqeval, title={{seqeval}: A Python framework for sequence labeling evaluation},
  author={Hiroki Nakayama}, year={2018}, url={https://github.com/chakki-works/seqeval}}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of sentences, each a list of predicted tags (str, IOB).
    references: list of sentences, each a list of gold tags (same lengths as predictions).
    mode: None (default; conlleval-compatible, lenient about I- without B-) or "strict".
    scheme: tagging scheme for mode="strict": "IOB1", "IOB2" (default), "IOE1", "IOE2", "IOBES", "BILOU".
    zero_division: value when a ratio is 0/0 (default 0).
Returns: precision, recall, f1 (micro-averaged over entities) and accuracy (over tokens),
    all floats; per-entity-type scores are left out so the result stays flat.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    """Entity-level precision/recall/F1 through seqeval."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="label"), id="sequence"),
                }
            ),
        )

    def _compute(self, predictions, references, mode=None, scheme="IOB2", zero_division=0):
        return seqeval_scores(predictions, references, mode=mode, scheme=scheme, zero_division=zero_division)
