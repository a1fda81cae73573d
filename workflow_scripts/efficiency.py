"""Rule efficiency: a model's size and latency, in a fork of the fork server when it
can take it."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:efficiency", forkserver=True)  # noqa: F821
