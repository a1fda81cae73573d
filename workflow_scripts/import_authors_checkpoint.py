"""Rule import_authors_checkpoint: a checkpoint in the MiniALBERT authors' layout, converted."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:import_authors_checkpoint")  # noqa: F821
