"""Rule exits_summary: every run with exits -> exits.csv and a score-against-latency plot per task."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:exits_summary")  # noqa: F821
