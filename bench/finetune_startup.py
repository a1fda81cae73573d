"""The fixed cost of one fine-tuning job: `minialbert finetune` with 0 epochs, end to end.

Every demo fine-tuning run is a separate process, so what a run pays before and after its
training steps (interpreter, imports, model and task loading, evaluation of dev and test,
metrics.json) is paid once per job. This bench builds the demo's student shape (random
weights) and the demo's SST-2 task in a temp dir, then times `python -m minialbert.cli
finetune --epochs 0` as a subprocess and prints one JSON line: the median wall seconds over
--repeats runs, and for reference a bare interpreter and `import torch` alone.

    python bench/finetune_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wall(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def build(root: Path) -> tuple[Path, Path]:
    """The demo world (small), a WordPiece tokenizer, the demo student shape and the SST-2 task."""
    from minialbert.data.tokenizers import train_wordpiece
    from minialbert.demo import DemoSizes, make_demo
    from minialbert.modeling import MiniAlbertForMaskedLM
    from minialbert.configuration import MiniAlbertConfig
    from minialbert.tasks import parse_task_spec, prepare_task

    make_demo(root / "demo", seed=0, sizes=DemoSizes(train_examples=1000, eval_examples=300))
    text = (root / "demo" / "corpus" / "corpus.txt").read_text().split("\n\n")
    tokenizer = train_wordpiece(text, vocab_size=4000)
    tokenizer.model_max_length = 128
    config = MiniAlbertConfig(vocab_size=len(tokenizer), embedding_size=64, hidden_size=128, num_hidden_layers=2,
                              num_attention_heads=4, intermediate_size=512, max_position_embeddings=128,
                              use_adapter=True, reduction_factor=8)
    model_dir = root / "model"
    MiniAlbertForMaskedLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    spec = parse_task_spec({"name": "sst2", "source": "glue_dir", "glue_task": "sst2",
                            "path": str(root / "demo" / "tasks" / "SST-2")})
    prepare_task(spec, root / "task")
    return model_dir, root / "task"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("full", "adapter"), default="full")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TQDM_DISABLE="1")
    with tempfile.TemporaryDirectory(prefix="minialbert-startup-") as tmp:
        root = Path(tmp)
        model_dir, task_dir = build(root)
        job = [sys.executable, "-m", "minialbert.cli", "finetune", "--model", str(model_dir), "--task", str(task_dir),
               "--mode", args.mode, "--lr", "1e-3", "--epochs", "0", "--threads", "1", "--output", str(root / "out")]
        wall(job, env)  # warm the page cache
        rows = []
        for _ in range(args.repeats):  # interleaved, so drifting load hits all three alike
            rows.append((wall([sys.executable, "-c", "pass"], env), wall([sys.executable, "-c", "import torch"], env),
                         wall(job, env)))
        metrics = json.loads((root / "out" / "metrics.json").read_text())
    python_s, torch_s, job_s = (statistics.median(col) for col in zip(*rows))
    print(json.dumps({"bench": "finetune_startup", "mode": args.mode, "repeats": args.repeats,
                      "job_seconds_median": round(job_s, 3), "python_seconds_median": round(python_s, 3),
                      "import_torch_seconds_median": round(torch_s, 3),
                      "eval_seconds": round(metrics["eval_seconds"], 3), "train_steps": metrics["train_steps"]}))


if __name__ == "__main__":
    main()
