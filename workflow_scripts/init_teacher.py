"""Save a pretrained teacher's architecture randomly initialised (`minialbert init-teacher`):
the `scratch` baseline, whose fine-tuning is training on the task alone."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
config_file = write_yaml(Path(out).parent / f".{Path(out).name}.init.yaml", cfg["command"])
cli("init-teacher", "--config", config_file, "--output", out)
