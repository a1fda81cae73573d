"""Generate the demo world (corpus + tasks in real layouts): `minialbert make-demo`."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
demo = cfg["demo"]
args = ["make-demo", "--output", out, "--seed", demo.get("seed", 0)]
for name, value in sorted((demo.get("sizes") or {}).items()):
    args += [f"--{name.replace('_', '-')}", value]
cli(*args)
