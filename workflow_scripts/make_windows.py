"""Cut a corpus into overlapping token windows: `minialbert make-windows`."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
cli("make-windows", "--corpus", cfg["corpus_dir"], "--tokenizer", cfg["tokenizer"],
    "--max-length", cfg["max_length"], "--stride", cfg["stride"], "--seed", cfg["seed"],
    "--num-proc", cfg["num_proc"], "--max-windows-per-doc", cfg["max_windows_per_document"] or 0,
    "--output", out)
