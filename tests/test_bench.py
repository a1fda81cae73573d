"""The evaluation benchmark's two paths make the same predictions and scores on the same data
(so its ratio compares like with like), and it pads the baseline the way the authors did; the
distillation benchmark times a relaxed student's step beside the plain one."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_throughput_paths_agree():
    out = subprocess.run(
        [sys.executable, "bench/eval_throughput.py", "--examples", "24", "--batch-size", "8", "--repeats", "1",
         "--naive-max-length", "64", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["scores_agree"] is True and figures["predictions_agree"] is True
    assert figures["predicted_classes"] == 2  # otherwise agreement would not test the batching order
    assert figures["examples"] == 24 and figures["naive_padded_to"] == 64
    for key in ("batched_examples_per_second", "naive_examples_per_second", "ratio", "ratio_same_padding"):
        assert figures[key] > 0


def test_eval_throughput_pads_like_the_authors_by_default():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import eval_throughput
    finally:
        sys.path.pop(0)

    class Tok:
        model_max_length = 512

    class Unset:
        model_max_length = int(1e30)

    class Model:
        class config:
            max_position_embeddings = 256

    class Long:
        class config:
            max_position_embeddings = 1024

    assert eval_throughput.authors_max_length(Tok(), Long()) == 512
    assert eval_throughput.authors_max_length(Tok(), Model()) == 256  # a model with fewer positions
    assert eval_throughput.authors_max_length(Unset(), Model()) == 256


def test_distill_throughput_times_the_relaxed_step_beside_the_plain_one():
    out = subprocess.run(
        [sys.executable, "bench/distill_throughput.py", "--hidden-size", "32", "--teacher-layers", "2",
         "--recursions", "2", "--heads", "2", "--embedding-size", "16", "--vocab-size", "60", "--batch-size", "2",
         "--max-length", "16", "--steps", "2", "--device", "cpu", "--skip-naive", "--lora-rank", "4"],
        cwd=ROOT, capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["lora_rank"] == 4 and "naive_seconds_per_step" not in figures
    assert figures["relaxed_seconds_per_step"] > 0 and figures["engine_seconds_per_step"] > 0
    assert figures["relaxed_over_engine"] > 0 and figures["relaxed_over_engine_median"] > 0
