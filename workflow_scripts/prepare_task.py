"""Parse one task's files (GLUE / BioBERT layouts, hub, custom) into a prepared task dir: `minialbert prepare-task`."""

import os
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821

# The spec file is read relative to its own folder; config paths are relative to the
# working directory: make them absolute.
spec = dict(cfg["spec"])
if isinstance(spec.get("path"), str):
    spec["path"] = os.path.abspath(os.path.expanduser(spec["path"]))
if isinstance(spec.get("files"), dict):
    spec["files"] = {k: os.path.abspath(os.path.expanduser(v)) if isinstance(v, str) else v
                     for k, v in spec["files"].items()}
spec_file = write_yaml(Path(out).parent / f".{Path(out).name}.spec.yaml", spec)
cli("prepare-task", "--spec", spec_file, "--output", out)
