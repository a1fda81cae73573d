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


def test_gpu_check_dry_writes_every_field(tmp_path):
    """`bash bench/gpu_check.sh --dry` (what CI runs): the JSON in $OUT with every field, the
    compiled step's figures beside the eager one's and the fine-tuning step's."""
    import os

    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", "bench/gpu_check.sh", "--dry"], cwd=ROOT, env=env, capture_output=True, text=True,
                   check=True, timeout=600)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] is True and report["device"] == "cpu" and report["capability"] is None
    assert report["native_bf16"] is False and report["precision"] == "fp32" and report["compile_backend"] == "aot_eager"
    assert report["sdpa_backend"] in ("math", "flash_attention", "efficient_attention")
    assert report["peak_tflops"] > 0 and "measured" in report["peak_source"]
    step = ("seconds_per_step", "tokens_per_second", "tflops_per_second", "mfu", "peak_memory_bytes")
    for part in (report["distill"]["eager"], report["distill"]["compiled"], report["finetune"]):
        assert all(part[k] > 0 for k in step), part
    assert report["distill"]["compiled_over_eager"] > 0 and report["distill"]["model_tflops_per_step"] > 0
    assert report["distill"]["shape"]["batch_size"] == 2 and report["finetune"]["shape"]["max_length"] == 16
    for key in ("torch", "cuda", "wall_seconds", "student_attention"):
        assert key in report or key in report["distill"]
