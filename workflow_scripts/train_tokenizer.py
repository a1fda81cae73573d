"""Train a WordPiece tokenizer on a corpus: `minialbert train-tokenizer`."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
args = ["train-tokenizer", "--corpus", cfg["corpus_dir"], "--vocab-size", cfg["vocab_size"], "--output", out]
if not cfg["lowercase"]:
    args.append("--cased")
cli(*args)
