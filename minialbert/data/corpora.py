"""Corpora: turn a corpus source into a datasets Arrow dir with one column, `text`.

A corpus source is a mapping (a YAML/JSON file, a config entry or a dict) of one of three kinds:

    # a dataset on the model hub (or a local dataset dir that `datasets.load_dataset` reads)
    {type: hub, name: wikimedia/wikipedia, config: 20231101.en, split: train, text_column: text}

    # local files: one path, a glob, or a list of them
    {type: files, paths: ["data/*.jsonl"], format: jsonl, text_column: text}
    {type: files, paths: [abstracts.txt], format: text, text_layout: blank_line}

    # the demo world's corpus (minialbert.demo), generated in memory
    {type: demo, seed: 0, sizes: {num_drugs: 120, ...}}

Files formats: `text` (needs `text_layout`: `line` = one document per line, `blank_line` =
documents separated by one or more blank lines, their lines joined with "\\n"; there is no
default because guessing wrong silently changes what a document is), `jsonl` (one JSON object
per line), `csv` (with a header row), `parquet`. `format` may be left out when every file's
extension says it (.txt, .jsonl/.json, .csv, .parquet). `text_column` defaults to `text`.
Relative paths are relative to the current working directory. Optional for every kind:
`max_documents` (keep the first N documents).

Documents that are empty or whitespace-only are dropped; a corpus with no document left is an
error, as are a missing file, a glob that matches nothing and a missing text column.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from minialbert.utils import ConfigError, atomic_directory, did_you_mean, iter_jsonl, load_yaml, read_json

SOURCE_TYPES = ("hub", "files", "demo")
FILE_FORMATS = ("text", "jsonl", "csv", "parquet")
TEXT_LAYOUTS = ("line", "blank_line")
_EXTENSION_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv",
                      ".parquet": "parquet"}
_ALLOWED_KEYS = {
    "hub": {"type", "name", "config", "split", "text_column", "max_documents"},
    "files": {"type", "paths", "format", "text_layout", "text_column", "max_documents"},
    "demo": {"type", "seed", "sizes", "max_documents"},
}


# ---------------------------------------------------------------------------------------
# Source specs
# ---------------------------------------------------------------------------------------

def read_source_spec(path: str | Path) -> dict:
    """Read a corpus source spec from a .yaml/.yml or .json file and validate it."""
    path = Path(path)
    spec = read_json(path, "corpus source spec") if path.suffix == ".json" else load_yaml(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with a `type` field, got {type(spec).__name__}")
    return validate_source(spec, where=str(path))


def validate_source(spec: dict, where: str = "corpus source") -> dict:
    """Check a source spec and return it with defaults filled in; errors name `where` and the field."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a `type` field, got {type(spec).__name__}")
    kind = spec.get("type")
    if kind not in SOURCE_TYPES:
        raise ConfigError(f"{where}: field `type` must be one of {', '.join(SOURCE_TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - _ALLOWED_KEYS[kind])
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} for a `{kind}` source "
                          f"(allowed: {', '.join(sorted(_ALLOWED_KEYS[kind]))})"
                          f"{did_you_mean(unknown[0], _ALLOWED_KEYS[kind])}")
    spec = dict(spec)
    limit = spec.setdefault("max_documents", None)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{where}: field `max_documents` must be a positive integer or null, got {limit!r}")
    if kind == "hub":
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ConfigError(f"{where}: field `name` (hub dataset name or local dataset dir) is required")
        spec.setdefault("config", None)
        spec.setdefault("split", "train")
        spec.setdefault("text_column", "text")
    elif kind == "files":
        paths = spec.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        if not paths or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise ConfigError(f"{where}: field `paths` must be a path, a glob or a list of them, got {paths!r}")
        spec["paths"] = paths
        fmt = spec.setdefault("format", None)
        if fmt is not None and fmt not in FILE_FORMATS:
            raise ConfigError(f"{where}: field `format` must be one of {', '.join(FILE_FORMATS)}, got {fmt!r}")
        layout = spec.setdefault("text_layout", None)
        if layout is not None and layout not in TEXT_LAYOUTS:
            raise ConfigError(f"{where}: field `text_layout` must be one of {', '.join(TEXT_LAYOUTS)}, got {layout!r}")
        spec.setdefault("text_column", "text")
    else:
        spec.setdefault("seed", 0)
        spec.setdefault("sizes", {})
        if not isinstance(spec["sizes"], dict):
            raise ConfigError(f"{where}: field `sizes` must be a mapping of demo sizes, got {spec['sizes']!r}")
    return spec


def resolve_files(spec: dict, where: str = "corpus source") -> list[tuple[Path, str]]:
    """Expand the paths/globs of a `files` source into (file, format) pairs, sorted within
    each glob so that document order does not depend on the file system."""
    files: list[tuple[Path, str]] = []
    for pattern in spec["paths"]:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise ConfigError(f"{where}: field `paths`: the glob {pattern!r} matches no file")
        else:
            if not os.path.isfile(pattern):
                raise ConfigError(f"{pattern}: corpus file not found (field `paths` of {where})")
            matches = [pattern]
        for match in matches:
            files.append((Path(match), _file_format(Path(match), spec, where)))
    return files


def input_files(spec: dict) -> list[Path]:
    """The local files a source reads, for a workflow to declare as inputs (editing one reruns
    the ingestion): the existing matches of a `files` source's paths/globs, or every file of a
    `hub` source whose name is a local dataset dir. Missing files are left to the reader."""
    if spec["type"] == "files":
        paths = [p for pattern in spec["paths"]
                 for p in (sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern])]
    elif spec["type"] == "hub" and os.path.isdir(os.path.expanduser(spec["name"])):
        root = os.path.expanduser(spec["name"])
        paths = []
        for d, dirs, files in os.walk(root):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))  # not .cache, .git
            paths += [os.path.join(d, f) for f in sorted(files) if not f.startswith(".")]
    else:
        return []
    return [Path(p) for p in dict.fromkeys(paths) if os.path.isfile(p)]


def _file_format(path: Path, spec: dict, where: str) -> str:
    fmt = spec["format"] or _EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"{path}: cannot tell the format from the extension {path.suffix!r}; set field `format` "
                          f"of {where} to one of {', '.join(FILE_FORMATS)}")
    if fmt == "text" and spec["text_layout"] is None:
        raise ConfigError(f"{path}: plain-text corpus file, but field `text_layout` of {where} is not set "
                          f"(expected `line`: one document per line, or `blank_line`: documents separated by "
                          f"blank lines)")
    return fmt


# ---------------------------------------------------------------------------------------
# Readers: each yields document strings and names the file (and line) on bad input
# ---------------------------------------------------------------------------------------

def _read_text(path: Path, layout: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        if layout == "line":
            for line in f:
                yield line.rstrip("\n")
            return
        lines: list[str] = []
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n"))
            elif lines:
                yield "\n".join(lines)
                lines = []
        if lines:
            yield "\n".join(lines)


def _read_jsonl(path: Path, column: str) -> Iterator[str]:
    for lineno, record in iter_jsonl(path):
        if column not in record:
            raise ConfigError(f"{path}: line {lineno}: expected a JSON object with the text column {column!r}")
        yield _as_text(record[column], path, lineno, column)


def _read_csv(path: Path, column: str) -> Iterator[str]:
    csv.field_size_limit(2**31 - 1)  # whole articles in one cell are normal for corpora
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise ConfigError(f"{path}: empty CSV file (expected a header row with the text column {column!r})")
        if column not in reader.fieldnames:
            raise ConfigError(f"{path}: CSV header has no text column {column!r} "
                              f"(columns: {', '.join(reader.fieldnames)})")
        for row in reader:
            yield _as_text(row[column], path, reader.line_num, column)


def _read_parquet(path: Path, column: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise ConfigError(f"{path}: not a readable Parquet file ({e})") from None
    if column not in parquet.schema_arrow.names:
        raise ConfigError(f"{path}: Parquet file has no text column {column!r} "
                          f"(columns: {', '.join(parquet.schema_arrow.names)})")
    for batch in parquet.iter_batches(columns=[column], batch_size=1000):
        for value in batch.column(0).to_pylist():
            yield _as_text(value, path, None, column)


def _as_text(value: Any, path: Path, lineno: int | None, column: str) -> str:
    if value is None:
        return ""  # a missing cell is an empty document, dropped like the others
    if not isinstance(value, str):
        where = f"{path}:{lineno}" if lineno else str(path)
        raise ConfigError(f"{where}: text column {column!r} must hold strings, got {type(value).__name__}")
    return value


def iter_file_documents(spec: dict, where: str = "corpus source") -> Iterator[str]:
    """All documents of a `files` source, file by file, in order."""
    for path, fmt in resolve_files(spec, where):
        if fmt == "text":
            yield from _read_text(path, spec["text_layout"])
        elif fmt == "jsonl":
            yield from _read_jsonl(path, spec["text_column"])
        elif fmt == "csv":
            yield from _read_csv(path, spec["text_column"])
        else:
            yield from _read_parquet(path, spec["text_column"])


# ---------------------------------------------------------------------------------------
# Ingestion
# ---------------------------------------------------------------------------------------

def _load_hub(spec: dict, where: str):
    """The hub dataset's split with only its text column, renamed to `text`."""
    from minialbert.data.hub import load_dataset

    try:  # offline, from the fetch step's cache, when the workflow fetched it (minialbert.data.hub)
        ds = load_dataset(spec["name"], spec["config"], split=spec["split"])
    except Exception as e:  # the hub client raises many types; all mean "cannot load this"
        raise ConfigError(f"{where}: cannot load hub dataset {spec['name']!r} (config {spec['config']!r}, "
                          f"split {spec['split']!r}): {type(e).__name__}: {e}") from None
    column = spec["text_column"]
    if column not in ds.column_names:
        raise ConfigError(f"{where}: hub dataset {spec['name']!r} has no text column {column!r} "
                          f"(field `text_column`; columns: {', '.join(ds.column_names)})")
    ds = ds.select_columns([column])
    if column != "text":
        ds = ds.rename_column(column, "text")
    return ds


def _source_documents(spec: dict, where: str) -> Iterator[str]:
    """The documents of a `files` or `demo` source, in order."""
    if spec["type"] == "files":
        return iter_file_documents(spec, where)
    from minialbert.demo import DemoSizes, demo_corpus_documents

    try:
        sizes = DemoSizes(**spec["sizes"])
    except TypeError as e:
        raise ConfigError(f"{where}: field `sizes`: {e}") from None
    return iter(demo_corpus_documents(spec["seed"], sizes))


def _write_documents(documents: Iterator[str], cache_dir: str, limit: int | None):
    """Stream non-blank documents into an Arrow file (never the whole corpus in memory) and
    return it as a Dataset."""
    import datasets
    from datasets.arrow_writer import ArrowWriter

    path = str(Path(cache_dir) / "documents.arrow")
    count = 0
    with ArrowWriter(features=datasets.Features({"text": datasets.Value("string")}), path=path) as writer:
        for text in documents:
            if limit is not None and count >= limit:
                break
            if text.strip():
                writer.write({"text": text})
                count += 1
        writer.finalize()
    return datasets.Dataset.from_file(path)


def ingest_corpus(source: dict | str | Path, output: str | Path, num_proc: int | None = None):
    """Read a corpus source (a spec dict or a spec file) and write it atomically to `output`
    as a datasets Arrow dir with one column, `text`; returns the written Dataset."""
    if isinstance(source, (str, Path)):
        where = str(source)
        spec = read_source_spec(source)
    else:
        where = "corpus source"
        spec = validate_source(source, where)
    with tempfile.TemporaryDirectory(prefix="minialbert-ingest-") as cache_dir:
        if spec["type"] == "hub":
            ds = _load_hub(spec, where)
            ds = ds.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True,
                           num_proc=num_proc)
            if spec["max_documents"] is not None and len(ds) > spec["max_documents"]:
                ds = ds.select(range(spec["max_documents"]))
        else:
            if spec["type"] == "files":
                resolve_files(spec, where)  # fail on a missing file before any work
            ds = _write_documents(_source_documents(spec, where), cache_dir, spec["max_documents"])
        if len(ds) == 0:
            what = ", ".join(spec["paths"]) if spec["type"] == "files" else f"the {spec['type']} source"
            raise ConfigError(f"{where}: the corpus is empty (no non-blank document in {what})")
        with atomic_directory(output) as tmp:
            ds.save_to_disk(str(tmp))
    return load_corpus(output)


def load_corpus(path: str | Path):
    """Load a corpus dir written by `ingest_corpus` (a datasets Arrow dir with a `text` column)."""
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: corpus directory not found (expected the output of `minialbert ingest-corpus`)")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: not a datasets Arrow directory ({e})") from None
    if not isinstance(ds, datasets.Dataset) or "text" not in ds.column_names:
        raise ConfigError(f"{path}: expected a single Dataset with a `text` column")
    return ds


# --- CLI: minialbert ingest-corpus -----------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a corpus as a datasets Arrow dir (column `text`). Give the source as a spec file "
        "(--source SPEC.yaml|json, see minialbert.data.corpora) or with one of --hub, --files, --demo.")
    parser.add_argument("--output", required=True, help="corpus dir to write (replaced atomically)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--source", help="corpus source spec, YAML or JSON (type: hub | files | demo)")
    group.add_argument("--hub", metavar="NAME", help="hub dataset name (or a local dataset dir)")
    group.add_argument("--files", nargs="+", metavar="PATH_OR_GLOB", help="local corpus files")
    group.add_argument("--demo", action="store_true", help="the demo world's corpus (see `minialbert make-demo`)")
    parser.add_argument("--config", help="--hub: dataset config name, e.g. 20231101.en")
    parser.add_argument("--split", default="train", help="--hub: split (default train)")
    parser.add_argument("--text-column", default="text", help="--hub/--files: column holding the text (default text)")
    parser.add_argument("--format", choices=FILE_FORMATS, help="--files: file format (default: from the extension)")
    parser.add_argument("--text-layout", choices=TEXT_LAYOUTS,
                        help="--files with plain text: `line` = one document per line, `blank_line` = documents "
                             "separated by blank lines (required for text files)")
    parser.add_argument("--seed", type=int, default=0, help="--demo: world seed (default 0)")
    parser.add_argument("--max-documents", type=int, help="keep only the first N documents")
    parser.add_argument("--num-proc", type=int, help="--hub: processes for dropping blank documents (default 1)")


def source_from_args(args: argparse.Namespace) -> dict | str:
    """The source spec the CLI flags describe (or the --source file's path)."""
    if args.source:
        return args.source
    if args.hub:
        spec = {"type": "hub", "name": args.hub, "config": args.config, "split": args.split,
                "text_column": args.text_column}
    elif args.files:
        spec = {"type": "files", "paths": args.files, "format": args.format, "text_layout": args.text_layout,
                "text_column": args.text_column}
    else:
        spec = {"type": "demo", "seed": args.seed}
    spec["max_documents"] = args.max_documents
    return spec


def run(args: argparse.Namespace) -> int:
    ds = ingest_corpus(source_from_args(args), args.output, num_proc=args.num_proc)
    print(f"wrote {args.output}: {len(ds)} documents")
    return 0
