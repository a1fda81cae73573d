"""Rule ingest_corpus: a corpus source -> raw text as a datasets Arrow dir."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:ingest_corpus")  # noqa: F821
