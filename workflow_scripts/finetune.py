"""Fine-tune one model on one task (one mode, lr and seed): `minialbert finetune`."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, set_torch_threads, start  # noqa: E402

from minialbert.utils import read_json, write_json_atomic  # noqa: E402

cfg = start(snakemake)  # noqa: F821
set_torch_threads(snakemake)  # noqa: F821
cli(
    "finetune",
    "--model", cfg["model_dir"],
    "--task", cfg["task_dir"],
    "--mode", cfg["mode"],
    "--lr", cfg["lr"],
    "--seed", cfg["seed"],
    "--epochs", cfg["epochs"],
    "--batch-size", cfg["batch_size"],
    "--max-length", cfg["max_length"],
    "--scheduler", cfg["scheduler"],
    "--weight-decay", cfg["weight_decay"],
    "--warmup", cfg["warmup"],
    "--output", Path(snakemake.output[0]).parent,  # noqa: F821
)

# Record which upstream configs produced this run (the model's identity hash and the job's
# own config), so runs.csv can tell apart runs of different versions of the same model.
metrics_path = snakemake.output[0]  # noqa: F821
metrics = read_json(metrics_path, "metrics.json")
metrics["workflow"] = {"model_identity": cfg["model_identity"], "task_identity": cfg["task_identity"], "job_config": cfg}
write_json_atomic(metrics_path, metrics)
