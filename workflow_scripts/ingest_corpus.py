"""Ingest one corpus (the demo's, a hub dataset or local files) into an Arrow dir: `minialbert ingest-corpus`."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, start, write_yaml  # noqa: E402

cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
from pathlib import Path  # noqa: E402

entry = cfg["corpus"]
if entry["source"] == "demo":
    # the corpus make-demo wrote beside its tasks (same seed and sizes: one world)
    spec = {"type": "files", "paths": [cfg["demo_corpus"]], "format": "text", "text_layout": "blank_line"}
elif entry["source"] == "hub":
    spec = {"type": "hub", **{k: v for k, v in entry["hub"].items() if k != "revision" and v is not None}}
else:
    spec = {"type": "files", **entry["files"]}
if entry.get("max_documents"):
    spec["max_documents"] = entry["max_documents"]
spec_file = write_yaml(Path(out).parent / f".{Path(out).name}.source.yaml", spec)
cli("ingest-corpus", "--source", spec_file, "--output", out)
