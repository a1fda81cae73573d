"""Rule prepare_task: a task's splits, tokenised."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:prepare_task")  # noqa: F821
