"""Rule make_windows: a corpus tokenized into training windows."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:make_windows")  # noqa: F821
