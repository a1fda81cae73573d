"""The shipped `evaluate` metric modules agree with scikit-learn / scipy / seqeval."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from seqeval.metrics import f1_score as seq_f1
from seqeval.metrics import precision_score as seq_precision
from seqeval.metrics import recall_score as seq_recall
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from minialbert.metrics import METRIC_MODULES_DIR, glue_metrics, load_metric, seqeval_metrics

PRED = [0, 1, 1, 0, 1, 1, 0, 0, 1, 0]
GOLD = [0, 1, 0, 0, 1, 1, 1, 0, 1, 1]
SCORES = [0.1, 2.5, 3.3, 4.9, 1.2, 0.0, 3.1]
GOLD_SCORES = [0.0, 2.0, 3.8, 5.0, 1.6, 0.4, 2.2]


def test_modules_are_local_files():
    assert (METRIC_MODULES_DIR / "glue" / "glue.py").is_file()
    assert (METRIC_MODULES_DIR / "seqeval" / "seqeval.py").is_file()
    assert load_metric("glue", "cola").name == "glue"


def test_cola_matthews():
    assert glue_metrics("cola", PRED, GOLD) == {"matthews_correlation": pytest.approx(matthews_corrcoef(GOLD, PRED))}


@pytest.mark.parametrize("task", ["mrpc", "qqp"])
def test_accuracy_and_f1(task):
    assert glue_metrics(task, PRED, GOLD) == {"accuracy": pytest.approx(accuracy_score(GOLD, PRED)),
                                              "f1": pytest.approx(f1_score(GOLD, PRED))}


@pytest.mark.parametrize("task", ["sst2", "mnli", "qnli", "rte", "wnli"])
def test_accuracy_tasks(task):
    assert glue_metrics(task, PRED, GOLD) == {"accuracy": pytest.approx(accuracy_score(GOLD, PRED))}


def test_stsb_correlations():
    result = glue_metrics("stsb", SCORES, GOLD_SCORES)
    assert result["pearson"] == pytest.approx(pearsonr(GOLD_SCORES, SCORES)[0], rel=1e-5)
    assert result["spearmanr"] == pytest.approx(spearmanr(GOLD_SCORES, SCORES)[0], rel=1e-5)


def test_generic_classification():
    pred, gold = [0, 2, 1, 1, 2, 0], [0, 2, 2, 1, 1, 0]
    result = glue_metrics("classification", pred, gold)
    assert result == {"accuracy": pytest.approx(accuracy_score(gold, pred)),
                      "f1_macro": pytest.approx(f1_score(gold, pred, average="macro")),
                      "matthews_correlation": pytest.approx(matthews_corrcoef(gold, pred))}


def test_unknown_glue_config():
    with pytest.raises(KeyError, match="unknown config 'squad'"):
        glue_metrics("squad", PRED, GOLD)


GOLD_TAGS = [["B-Chemical", "O", "O", "B-Disease", "I-Disease"], ["O", "B-Chemical", "I-Chemical", "O"], ["B-Disease"]]
PRED_TAGS = [["B-Chemical", "O", "O", "B-Disease", "O"], ["O", "I-Chemical", "I-Chemical", "O"], ["O"]]


def test_seqeval_parity():
    result = seqeval_metrics(PRED_TAGS, GOLD_TAGS)
    assert result["precision"] == pytest.approx(seq_precision(GOLD_TAGS, PRED_TAGS))
    assert result["recall"] == pytest.approx(seq_recall(GOLD_TAGS, PRED_TAGS))
    assert result["f1"] == pytest.approx(seq_f1(GOLD_TAGS, PRED_TAGS))
    flat_gold, flat_pred = sum(GOLD_TAGS, []), sum(PRED_TAGS, [])
    assert result["accuracy"] == pytest.approx(np.mean([g == p for g, p in zip(flat_gold, flat_pred)]))


def test_seqeval_is_entity_level_and_strict_mode():
    # the I-Chemical run without a B- counts as an entity in the default (conlleval) mode only
    lenient = seqeval_metrics(PRED_TAGS, GOLD_TAGS)
    strict = seqeval_metrics(PRED_TAGS, GOLD_TAGS, mode="strict", scheme="IOB2")
    assert lenient["f1"] == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))
    assert (strict["precision"], strict["recall"]) == (pytest.approx(1 / 2), pytest.approx(1 / 4))
    assert seqeval_metrics(GOLD_TAGS, GOLD_TAGS)["f1"] == 1.0


@pytest.mark.parametrize("config, pred, gold", [
    ("cola", [0, 1, 1, 0, 1, 2, 2], [0, 1, 0, 0, 1, 2, 1]),
    ("mrpc", [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]),
    ("classification", [0, 1, 2, 2, 1, 0], [0, 2, 2, 2, 1, 1]),
    ("stsb", [0.1, 0.5, 0.5, 2.0, 3.5, 3.5, 4.9], [0.0, 1.0, 1.0, 2.5, 3.0, 4.5, 5.0]),
])
def test_direct_scores_equal_the_evaluate_module_and_sklearn_scipy(config, pred, gold):
    """Fine-tuning computes metrics without importing evaluate; the shipped module and the
    reference libraries agree with it."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    direct = glue_metrics(config, pred, gold)
    assert direct == pytest.approx(load_metric("glue", config).compute(predictions=pred, references=gold))
    if config in ("cola", "classification"):
        assert direct["matthews_correlation"] == pytest.approx(matthews_corrcoef(gold, pred))
    if config == "classification":
        assert direct["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro"))
    if config == "stsb":
        assert direct["pearson"] == pytest.approx(pearsonr(gold, pred)[0])
        assert direct["spearmanr"] == pytest.approx(spearmanr(gold, pred)[0])


def test_finetune_metrics_do_not_import_evaluate():
    import subprocess
    import sys

    code = ("import sys; from minialbert.metrics import compute_metric; "
            "compute_metric('glue', 'stsb', [0.1, 0.4, 0.9], [0.0, 0.5, 1.0]); "
            "compute_metric('glue', 'sst2', [0, 1], [0, 0]); "
            "print(sorted(m for m in ('evaluate', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
