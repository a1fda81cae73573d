"""Rule train_tokenizer: a WordPiece tokenizer trained on a corpus."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:train_tokenizer")  # noqa: F821
