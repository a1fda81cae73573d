"""Parameter counts and CPU latency/throughput of one model at a fixed shape: `minialbert efficiency`."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
cli("efficiency", "--model", cfg["model_dir"], "--output", out, "--batch-size", cfg["batch_size"],
    "--seq-len", cfg["seq_len"], "--repeats", cfg["repeats"], "--warmup", cfg["warmup"],
    "--threads", cfg["threads"])
