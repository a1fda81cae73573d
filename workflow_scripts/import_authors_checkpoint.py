"""Convert a published MiniALBERT checkpoint (hub name or dir) into a minialbert model dir."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
cli("import-authors-checkpoint", cfg["source"], out)
