"""Rule aggregate: the runs' metrics -> tables and plots."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:aggregate")  # noqa: F821
