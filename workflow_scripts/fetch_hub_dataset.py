"""Rule fetch_hub_dataset (a local rule: the submit host): a hub dataset into the Hugging Face cache."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import run  # noqa: E402

run(snakemake, "minialbert.workflow.jobs:fetch_hub_dataset")  # noqa: F821
