"""Collect every fine-tuning run and efficiency measurement into tables and a plot."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import start  # noqa: E402

cfg = start(snakemake)  # noqa: F821

from minialbert.report import aggregate  # noqa: E402

aggregate(
    run_files=list(snakemake.input.runs),  # noqa: F821
    efficiency_files=list(snakemake.input.efficiency),  # noqa: F821
    output_dir=Path(snakemake.output.table).parent,  # noqa: F821
    models=cfg["models"],
    tasks=cfg["tasks"],
)
