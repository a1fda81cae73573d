"""Every rule's entry point: send output to the job's log, then job config -> command
(minialbert.workflow.jobs)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import start  # noqa: E402

start(snakemake)  # noqa: F821

from minialbert.workflow.jobs import run_job  # noqa: E402

run_job(snakemake)  # noqa: F821
