"""Rule exit_timing: batch-1 latency and batch-32 throughput of a run with exits (adaptive
depth) against full depth, fixed depth and the teacher."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:exit_timing")  # noqa: F821
