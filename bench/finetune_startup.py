"""The fixed cost of one fine-tuning job: a job with 0 epochs, end to end.

Every demo fine-tuning run is a separate job, so what a run pays before and after its
training steps (interpreter, imports, model and task loading, evaluation of dev and test,
metrics.json) is paid once per job. This bench builds the demo's student shape (random
weights) and the demo's SST-2 task in a temp dir and times, over --repeats interleaved runs:

- the job as the workflow runs it: Snakemake's script for the rule (its preamble, which
  unpickles the `snakemake` object, then workflow_scripts/finetune.py, log redirection
  included), with the fork server warm (`workflow_job_seconds_median`), and with it turned off
  (MINIALBERT_FORKSERVER=0: the job imports everything itself, `workflow_job_in_process_seconds_median`);
  the first job, which starts the server, is timed once (`workflow_first_job_seconds`);
- `python -m minialbert.cli finetune --epochs 0` (`job_seconds_median`, in-process);
- a bare interpreter and `import torch` alone, for reference.

It prints one JSON line.

    python bench/finetune_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def wall(argv: list[str], env: dict, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def build(root: Path) -> tuple[Path, Path]:
    """The demo world (small), a WordPiece tokenizer, the demo student shape and the SST-2 task."""
    from minialbert.data.tokenizers import train_wordpiece
    from minialbert.demo import DemoSizes, make_demo
    from minialbert.modeling import MiniAlbertForMaskedLM
    from minialbert.modeling import MiniAlbertConfig
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


def workflow_script(root: Path, model_dir: Path, task_dir: Path, mode: str) -> Path:
    """The script Snakemake runs for a finetune job: its preamble (as snakemake.script writes
    it) with the job's `snakemake` object pickled in, then the rule's workflow_scripts/finetune.py."""
    from snakemake import iocontainers as io

    command = {"model": str(model_dir), "task": str(task_dir), "mode": mode, "lr": 1e-3, "epochs": 0}
    job = io.Snakemake(io.InputFiles(fromdict={"model": str(model_dir), "task": str(task_dir)}),
                       io.OutputFiles([str(root / "workflow-out" / "metrics.json")]),
                       io.Params(fromdict={"job_config": json.dumps({"command": command})}),
                       io.Wildcards(fromdict={}), 1, io.ResourceList(fromdict={"_cores": 1}),
                       io.Log([str(root / "logs" / "finetune.log")]), {}, "finetune", 0, str(REPO / "workflow_scripts"))
    entry = REPO / "workflow_scripts" / "finetune.py"
    preamble = (f"import sys; sys.path.extend({[str(REPO / 'workflow_scripts')]!r}); import pickle; "
                f"snakemake = pickle.loads({pickle.dumps(job, protocol=4)!r}); from snakemake.logging import logger; "
                f"from snakemake.iocontainers import Snakemake; __file__ = {str(entry)!r};\n")
    script = root / "finetune.py"
    script.write_text(preamble + entry.read_text())
    return script


def stop_servers(server_dir: Path) -> None:
    """Terminate the bench's fork server and wait until it has removed its files."""
    for pid_file in server_dir.glob("*.pid"):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mode", choices=("full", "adapter"), default="full")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TQDM_DISABLE="1")
    env.pop("MINIALBERT_FORKSERVER", None)
    with tempfile.TemporaryDirectory(prefix="minialbert-startup-") as tmp, \
            tempfile.TemporaryDirectory(prefix="mafs-", dir="/tmp") as server_dir:
        root = Path(tmp)
        env["MINIALBERT_FORKSERVER_DIR"] = server_dir  # a server of this bench alone
        model_dir, task_dir = build(root)
        job = [sys.executable, "-m", "minialbert.cli", "finetune", "--model", str(model_dir), "--task", str(task_dir),
               "--mode", args.mode, "--lr", "1e-3", "--epochs", "0", "--threads", "1", "--output", str(root / "out")]
        workflow_job = [sys.executable, str(workflow_script(root, model_dir, task_dir, args.mode))]
        in_process_env = dict(env, MINIALBERT_FORKSERVER="0")
        try:
            wall(job, env)  # warm the page cache
            first_s = wall(workflow_job, env, cwd=root)
            rows = []
            for _ in range(args.repeats):  # interleaved, so drifting load hits all alike
                rows.append((wall([sys.executable, "-c", "pass"], env),
                             wall([sys.executable, "-c", "import torch"], env), wall(job, env),
                             wall(workflow_job, env, cwd=root), wall(workflow_job, in_process_env, cwd=root)))
        finally:
            stop_servers(Path(server_dir))
        metrics = json.loads((root / "out" / "metrics.json").read_text())
        forked = sum("forked by the fork server" in log.read_text() for log in (root / "logs").glob("*.attempt*.log"))
    python_s, torch_s, job_s, workflow_s, workflow_in_process_s = (statistics.median(col) for col in zip(*rows))
    print(json.dumps({"bench": "finetune_startup", "mode": args.mode, "repeats": args.repeats,
                      "workflow_job_seconds_median": round(workflow_s, 3),
                      "workflow_job_in_process_seconds_median": round(workflow_in_process_s, 3),
                      "workflow_first_job_seconds": round(first_s, 3), "forked_jobs": forked,
                      "job_seconds_median": round(job_s, 3), "python_seconds_median": round(python_s, 3),
                      "import_torch_seconds_median": round(torch_s, 3),
                      "eval_seconds": round(metrics["eval_seconds"], 3), "train_steps": metrics["train_steps"]}))


if __name__ == "__main__":
    main()
