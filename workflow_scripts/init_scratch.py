"""Rules init_scratch and init_architecture: a teacher's architecture saved untrained (a
`scratch` baseline; what a student needing no trained teacher is built against)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:init_scratch")  # noqa: F821
