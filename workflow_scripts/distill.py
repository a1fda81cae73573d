"""Rule distill: one student distilled from its teacher (torchrun with more than one GPU)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:distill")  # noqa: F821
