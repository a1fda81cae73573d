"""Rule make_demo: the generated demo world (corpus and task files)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:make_demo")  # noqa: F821
