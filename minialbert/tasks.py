"""Downstream tasks: read them from where researchers keep them and write prepared task dirs.

A task spec (YAML or JSON mapping) names a source and, where the source does not imply it, a
type (what depends on the type is defined in `minialbert.task_types`). Sources:
  glue_hub     the nine GLUE tasks from the hub (`datasets.load_dataset("nyu-mll/glue", task)`)
  glue_dir     a task dir in the original GLUE distribution layout (e.g. glue_data/MRPC)
  bio_ner_dir  biomedical NER in BioBERT's layout (train.tsv, devel.tsv, test.tsv; token<TAB>tag)
  hub_ner      a hub token-classification dataset (tokens + ner_tags with ClassLabel names)
  files        custom CSV / JSON-lines files with declared text and label columns

A prepared task dir holds raw text, not token ids, so each model's own tokenizer is applied at
fine-tuning time (teacher, students and baselines may tokenize differently):
  task.json  {name, type, source, main_metric, metric, metric_config, labels, splits}
  <split>/   one `datasets.save_to_disk` dir per split: `text` (+ `text_pair`) + `label`, or
             `tokens` + `tags` for token tasks; the label column is absent when a split has no
             labels (GLUE test sets).
"""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Iterable

from minialbert.task_types import TASK_TYPES, TaskType, task_type
from minialbert.utils import (ConfigError, atomic_directory, did_you_mean, iter_jsonl, load_yaml, read_json,
                              write_json_atomic)

logger = logging.getLogger(__name__)

SOURCES = ("glue_hub", "glue_dir", "bio_ner_dir", "hub_ner", "files")
# The task type a source implies (GLUE tasks: the GLUE table's; files: the spec's `type`)
SOURCE_TYPES = {"bio_ner_dir": "token", "hub_ner": "token"}
TASK_FILE = "task.json"


# --------------------------------------------------------------------------------------------
# The GLUE table: in one place, which columns each task reads, its type, labels and metric.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is read (hub and original-distribution layout) and scored."""

    keys: tuple[str, str | None]  # hub column names of the first and second text
    type: str  # single | pair | regression
    labels: tuple[str, ...] | None  # hub ClassLabel names, in hub id order; None for regression
    main_metric: str
    # Original GLUE layout: the text/label columns by header name (None = header-less CoLA),
    # the dev split files, and how raw label strings map onto `labels` (identity when absent).
    dir_columns: tuple[str, str | None, str] | None
    dir_dev_files: dict[str, str] = field(default_factory=lambda: {"dev": "dev.tsv"})
    dir_test_files: dict[str, str] = field(default_factory=lambda: {"test": "test.tsv"})
    dir_label_map: dict[str, str] | None = None


_BINARY = {"0": 0, "1": 1}  # raw label -> index into labels, for the 0/1-labelled tasks


def _binary(labels: tuple[str, str]) -> dict[str, str]:
    return {raw: labels[i] for raw, i in _BINARY.items()}


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(("sentence", None), "single", ("unacceptable", "acceptable"), "matthews_correlation",
                     None, dir_label_map=_binary(("unacceptable", "acceptable"))),
    "sst2": GlueTask(("sentence", None), "single", ("negative", "positive"), "accuracy",
                     ("sentence", None, "label"), dir_label_map=_binary(("negative", "positive"))),
    "mrpc": GlueTask(("sentence1", "sentence2"), "pair", ("not_equivalent", "equivalent"), "f1",
                     ("#1 String", "#2 String", "Quality"), dir_label_map=_binary(("not_equivalent", "equivalent"))),
    "stsb": GlueTask(("sentence1", "sentence2"), "regression", None, "pearson",
                     ("sentence1", "sentence2", "score")),
    "qqp": GlueTask(("question1", "question2"), "pair", ("not_duplicate", "duplicate"), "accuracy",
                    ("question1", "question2", "is_duplicate"), dir_label_map=_binary(("not_duplicate", "duplicate"))),
    "mnli": GlueTask(("premise", "hypothesis"), "pair", ("entailment", "neutral", "contradiction"), "accuracy",
                     ("sentence1", "sentence2", "gold_label"),
                     dir_dev_files={"dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
                     dir_test_files={"test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"}),
    "qnli": GlueTask(("question", "sentence"), "pair", ("entailment", "not_entailment"), "accuracy",
                     ("question", "sentence", "label")),
    "rte": GlueTask(("sentence1", "sentence2"), "pair", ("entailment", "not_entailment"), "accuracy",
                    ("sentence1", "sentence2", "label")),
    "wnli": GlueTask(("sentence1", "sentence2"), "pair", ("not_entailment", "entailment"), "accuracy",
                     ("sentence1", "sentence2", "label"), dir_label_map=_binary(("not_entailment", "entailment"))),
}
# hub split name -> our split name
GLUE_HUB_SPLITS = {
    "train": "train", "validation": "dev", "test": "test",
    "validation_matched": "dev_matched", "validation_mismatched": "dev_mismatched",
    "test_matched": "test_matched", "test_mismatched": "test_mismatched",
}


def split_role(split: str) -> str:
    """train | dev | test, from a split name such as `dev_matched`."""
    for role in ("train", "dev", "test"):
        if split == role or split.startswith(role + "_"):
            return role
    raise ValueError(f"split {split!r}: expected a name starting with train, dev or test")


# --------------------------------------------------------------------------------------------
# Task spec
# --------------------------------------------------------------------------------------------
def _spec_field(default=None, doc: str = ""):
    return field(default=default, metadata={"doc": doc})


@dataclass
class TaskSpec:
    """A validated task spec; `base_dir` resolves relative paths (the spec file's directory).
    Each field's doc is what `minialbert prepare-task --help` lists (`describe_spec_fields`)."""

    name: str = _spec_field(doc="the task's name (in task.json and the tables); the workflow sets its tasks key")
    source: str = _spec_field(doc="where the task comes from: " + ", ".join(SOURCES))
    type: str | None = _spec_field(doc="the task type (" + ", ".join(TASK_TYPES) + "): required for `files`; "
                                       "GLUE and NER sources imply it")
    glue_task: str | None = _spec_field(doc="glue_hub, glue_dir: one of " + ", ".join(GLUE_TASKS))
    path: str | None = _spec_field(doc="glue_dir, bio_ner_dir: the task dir (GLUE layout: train.tsv, dev*.tsv, "
                                       "optional test*.tsv; BioBERT layout: train.tsv or train_dev.tsv, devel.tsv "
                                       "or dev.tsv, optional test.tsv)")
    hub: dict | None = _spec_field(doc="glue_hub, hub_ner: {name: <hub dataset>, config: <config>} "
                                       "(glue_hub default: nyu-mll/glue and the glue_task)")
    files: dict | None = _spec_field(doc="files: {train: FILE, dev: FILE, test: FILE} (train required; split names "
                                         "start with train/dev/test, e.g. dev_matched); .csv, .tsv (header row) or "
                                         ".jsonl/.json (one object per line), by extension")
    text_columns: list[str] | None = _spec_field(doc="files: the text column(s): one for single and token (a JSON "
                                                     "list of words), two for pair, one or two for regression")
    label_column: str | None = _spec_field(doc="files: the label column: a class name (single, pair), a number "
                                               "(regression), a JSON list of tags (token); a test file may lack it")
    tokens_column: str = _spec_field("tokens", "hub_ner: the column of token lists")
    tags_column: str = _spec_field("ner_tags", "hub_ner: the column of tag ids (a Sequence of ClassLabel)")
    train_dev: bool = _spec_field(False, "bio_ner_dir: train on train_dev.tsv (train + devel; dev scores are then "
                                         "optimistic)")
    skip_malformed: bool = _spec_field(False, "glue_dir: skip (and count) lines with a wrong column count instead "
                                              "of failing")
    main_metric: str | None = _spec_field(doc="the metric that picks the lr and fills the table; default: the "
                                              "GLUE table's or the task type's")
    base_dir: str = "."
    origin: str = "<task spec>"

    @property
    def task_type(self) -> TaskType:
        """The task type object of `type` (set by `parse_task_spec`)."""
        return task_type(self.type)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


_SPEC_FIELDS = {f.name for f in dataclass_fields(TaskSpec) if "doc" in f.metadata}


def describe_spec_fields(indent: int = 2) -> str:
    """The spec fields, their defaults and docs (for `prepare-task --help` and the docs)."""
    lines = []
    for f in dataclass_fields(TaskSpec):
        if "doc" in f.metadata:
            default = "<required>" if f.name in ("name", "source") else "null" if f.default is None else \
                str(f.default).lower() if isinstance(f.default, bool) else str(f.default)
            lines.append(f"{' ' * indent}{f.name}: {default}  # {f.metadata['doc']}")
    return "\n".join(lines)


def parse_task_spec(data: dict, origin: str = "<task spec>", base_dir: str | Path = ".") -> TaskSpec:
    """Validate a task spec mapping; errors name `origin` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - _SPEC_FIELDS
    if unknown:
        raise ConfigError(f"{origin}: unknown field(s) {sorted(unknown)}; expected some of {sorted(_SPEC_FIELDS)}"
                          f"{did_you_mean(sorted(unknown)[0], _SPEC_FIELDS)}")
    for key in ("name", "source"):
        if not data.get(key):
            raise ConfigError(f"{origin}: field '{key}' is required")
    spec = TaskSpec(**data, base_dir=str(base_dir), origin=origin)
    if spec.source not in SOURCES:
        raise ConfigError(f"{origin}: field 'source' is {spec.source!r}; expected one of {list(SOURCES)}")
    if spec.type is not None and spec.type not in TASK_TYPES:
        raise ConfigError(f"{origin}: field 'type' is {spec.type!r}; expected one of {list(TASK_TYPES)}")
    if spec.source in ("glue_hub", "glue_dir"):
        glue = (spec.glue_task or "").lower().replace("-", "")
        if glue not in GLUE_TASKS:
            raise ConfigError(f"{origin}: field 'glue_task' is {spec.glue_task!r}; expected one of {list(GLUE_TASKS)}")
        spec.glue_task = glue
        if spec.type is not None and spec.type != GLUE_TASKS[glue].type:
            raise ConfigError(f"{origin}: field 'type' is {spec.type!r} but GLUE task {glue} is {GLUE_TASKS[glue].type!r}")
        spec.type = GLUE_TASKS[glue].type
    if spec.source in ("glue_dir", "bio_ner_dir") and not spec.path:
        raise ConfigError(f"{origin}: field 'path' is required for source {spec.source}")
    implied = SOURCE_TYPES.get(spec.source)
    if implied is not None:
        if spec.type not in (None, implied):
            raise ConfigError(f"{origin}: field 'type' must be {implied!r} for source {spec.source}")
        spec.type = implied
    if spec.source == "hub_ner" and not (isinstance(spec.hub, dict) and spec.hub.get("name")):
        raise ConfigError(f"{origin}: field 'hub' must be a mapping with 'name' (and optional 'config')")
    if spec.source == "files":
        _check_files_spec(spec)
    return spec


def _check_files_spec(spec: TaskSpec) -> None:
    origin = spec.origin
    if not isinstance(spec.files, dict) or "train" not in spec.files:
        raise ConfigError(f"{origin}: field 'files' must be a mapping with at least 'train' (and 'dev', 'test')")
    for split in spec.files:
        try:
            split_role(split)
        except ValueError as e:
            raise ConfigError(f"{origin}: field 'files': {e}") from None
    if spec.type is None:
        raise ConfigError(f"{origin}: field 'type' is required for source files; expected one of {list(TASK_TYPES)}")
    counts = spec.task_type.text_column_counts
    cols = spec.text_columns
    if not isinstance(cols, list) or len(cols) not in counts:
        want = counts[0] if len(counts) == 1 else counts
        raise ConfigError(f"{origin}: field 'text_columns' must list {want} column name(s) for type {spec.type}, got {cols!r}")
    if not spec.label_column:
        raise ConfigError(f"{origin}: field 'label_column' is required for source files")


def load_task_spec(path: str | Path) -> TaskSpec:
    """Read and validate a task spec file (YAML or JSON); relative paths are relative to it."""
    path = Path(path)
    data = read_json(path, "task spec") if path.suffix == ".json" else load_yaml(path)
    return parse_task_spec(data, origin=str(path), base_dir=path.parent)


# --------------------------------------------------------------------------------------------
# Reading sources: each reader returns {split: list of example dicts} with raw string labels
# (token tasks: lists of tag strings); `_finalise` maps labels to ids from the training split.
# --------------------------------------------------------------------------------------------
@dataclass
class RawSplit:
    """Examples of one split with raw (string or float) labels, plus the file they came from."""

    examples: list[dict]
    origin: str
    has_labels: bool = True


def _read_tsv(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line; quotes are NOT special (GLUE files contain bare quotes)."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                rows.append((lineno, line.split("\t")))
    if not rows:
        raise ConfigError(f"{path}: empty file")
    return rows


def _glue_file(spec: TaskSpec, task: GlueTask, path: Path, has_labels_expected: bool) -> RawSplit:
    """Read one file of the original GLUE distribution."""
    rows = _read_tsv(path)
    kind = spec.task_type
    if task.dir_columns is None:  # CoLA: header-less source/label/star/sentence; test has a header
        header = rows[0][1]
        if header == ["index", "sentence"]:
            return RawSplit([{"text": _field(path, ln, f, 1, 2)} for ln, f in rows[1:]], str(path), has_labels=False)
        examples = []
        for lineno, fields in rows:
            _expect_columns(path, lineno, fields, 4)
            examples.append({"text": fields[3], "label": task.dir_label_map.get(fields[1], fields[1])})
        return RawSplit(examples, str(path))
    header, body = rows[0][1], rows[1:]
    first, second, label = task.dir_columns
    position = {name: i for i, name in enumerate(header)}
    for column in (first, second):
        if column is not None and column not in position:
            raise ConfigError(f"{path}: line 1: header lacks column {column!r} (GLUE {spec.glue_task} layout); header is {header}")
    has_labels = label in position
    if has_labels_expected and not has_labels:
        raise ConfigError(f"{path}: line 1: header lacks label column {label!r} (GLUE {spec.glue_task} layout)")
    examples, skipped = [], 0
    for lineno, fields in body:
        if spec.skip_malformed and len(fields) != len(header):
            skipped += 1  # e.g. the few broken lines of some QQP copies; only when the spec asks
            continue
        _expect_columns(path, lineno, fields, len(header))
        example = {"text": fields[position[first]]}
        if second is not None:
            example["text_pair"] = fields[position[second]]
        if has_labels:
            raw = fields[position[label]]
            example["label"] = kind.parse_label((task.dir_label_map or {}).get(raw, raw), path, lineno)
        examples.append(example)
    if skipped:
        logger.warning("%s: skipped %d line(s) without %d columns (skip_malformed)", path, skipped, len(header))
    if not examples:
        raise ConfigError(f"{path}: no examples after the header")
    return RawSplit(examples, str(path), has_labels)


def _field(path: Path, lineno: int, fields: list[str], index: int, expected: int) -> str:
    _expect_columns(path, lineno, fields, expected)
    return fields[index]


def _expect_columns(path: Path, lineno: int, fields: list[str], expected: int) -> None:
    if len(fields) != expected:
        raise ConfigError(f"{path}: line {lineno}: expected {expected} tab-separated columns, found {len(fields)}")


def glue_dir_files(spec: TaskSpec) -> dict[str, tuple[Path, bool]]:
    """split -> (file, labels required) that `read_glue_dir` reads: train.tsv, the GLUE table's
    dev files, and its test files where present (test labels are unreleased: optional)."""
    task = GLUE_TASKS[spec.glue_task]
    root = spec.resolve(spec.path)
    if not root.is_dir():
        raise ConfigError(f"{spec.origin}: field 'path': {root} is not a directory")
    files = {"train": (root / "train.tsv", True)}
    files.update({split: (root / name, True) for split, name in task.dir_dev_files.items()})
    files.update({split: (root / name, False) for split, name in task.dir_test_files.items()
                  if (root / name).is_file()})
    return files


def read_glue_dir(spec: TaskSpec) -> dict[str, RawSplit]:
    """The GLUE task dir in the original distribution layout: train.tsv, dev*.tsv, optional test*.tsv."""
    task = GLUE_TASKS[spec.glue_task]
    return {split: _glue_file(spec, task, path, labelled) for split, (path, labelled) in glue_dir_files(spec).items()}


def read_glue_hub(spec: TaskSpec) -> dict[str, RawSplit]:
    """A GLUE task from the hub (nyu-mll/glue); label -1 marks the unlabelled test sets."""
    from minialbert.data.hub import load_dataset

    task = GLUE_TASKS[spec.glue_task]
    kind = spec.task_type
    hub = spec.hub or {}
    name = hub.get("name", "nyu-mll/glue")
    dsd = load_dataset(name, hub.get("config", spec.glue_task))  # offline when fetched (data.hub)
    splits = {}
    for hub_split, dataset in dsd.items():
        if hub_split not in GLUE_HUB_SPLITS:
            continue
        origin = f"{name}[{spec.glue_task}]/{hub_split}"
        first, second = task.keys
        for column in (first, second, "label"):
            if column is not None and column not in dataset.column_names:
                raise ConfigError(f"{origin}: missing column {column!r}; has {dataset.column_names}")
        # whole columns at once: row-by-row iteration is slow on QQP/MNLI-sized splits
        texts = list(dataset[first])
        pairs = list(dataset[second]) if second is not None else None
        raw_labels = list(dataset["label"])
        labelled = all(raw is not None and raw != -1 for raw in raw_labels)  # -1: unreleased test labels
        examples = []
        for i, text in enumerate(texts):
            example = {"text": text}
            if pairs is not None:
                example["text_pair"] = pairs[i]
            if labelled:
                raw = raw_labels[i]  # a ClassLabel id (named by the GLUE table) or a score
                if task.labels is not None and 0 <= raw < len(task.labels):
                    raw = task.labels[raw]
                example["label"] = kind.parse_label(raw, origin, i + 1)
            examples.append(example)
        splits[GLUE_HUB_SPLITS[hub_split]] = RawSplit(examples, origin, labelled)
    if "train" not in splits:
        raise ConfigError(f"{name}[{spec.glue_task}]: no train split; splits are {list(dsd)}")
    return splits


def read_conll_file(path: Path) -> RawSplit:
    """BioBERT/CoNLL-style token file: `token<TAB>tag` per line, a blank line between sentences."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append({"tokens": tokens, "tags": tags})
                    tokens, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):  # CoNLL document marker, not a sentence
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise ConfigError(f"{path}: line {lineno}: expected 'token<TAB>tag' (2 columns), found {len(fields)}")
            token, tag = fields[0].strip(), fields[1].strip()
            if not token:
                raise ConfigError(f"{path}: line {lineno}: tag {tag!r} without a token")
            if not tag:
                raise ConfigError(f"{path}: line {lineno}: token {token!r} without a tag")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise ConfigError(f"{path}: empty file (no sentences)")
    return RawSplit(sentences, str(path))


def bio_ner_files(spec: TaskSpec) -> dict[str, Path]:
    """split -> file that `read_bio_ner_dir` reads. train_dev.tsv (= train followed by devel) is
    the training file when the spec says `train_dev: true` or when train.tsv is absent; dev
    scores are then optimistic. devel.tsv (or dev.tsv) is required, test.tsv optional."""
    root = spec.resolve(spec.path)
    if not root.is_dir():
        raise ConfigError(f"{spec.origin}: field 'path': {root} is not a directory")
    train = root / "train.tsv"
    if spec.train_dev or not train.is_file():
        if (root / "train_dev.tsv").is_file():
            train = root / "train_dev.tsv"
        elif spec.train_dev:
            raise ConfigError(f"{spec.origin}: field 'train_dev' is true but {root / 'train_dev.tsv'} does not exist")
    dev = next((root / n for n in ("devel.tsv", "dev.tsv") if (root / n).is_file()), None)
    if dev is None:
        raise ConfigError(f"{root}: no devel.tsv (or dev.tsv) in the BioBERT NER layout")
    files = {"train": train, "dev": dev}
    if (root / "test.tsv").is_file():
        files["test"] = root / "test.tsv"
    return files


def read_bio_ner_dir(spec: TaskSpec) -> dict[str, RawSplit]:
    """BioBERT NER dir (the files of `bio_ner_files`)."""
    files = bio_ner_files(spec)
    if files["train"].name == "train_dev.tsv" and not spec.train_dev:
        logger.warning("%s: no train.tsv; training on train_dev.tsv (includes devel: dev scores are optimistic)",
                       files["train"].parent)
    return {split: read_conll_file(path) for split, path in files.items()}


def read_hub_ner(spec: TaskSpec) -> dict[str, RawSplit]:
    """A hub token-classification dataset: a tokens column and a tags column of ClassLabel ids."""
    from minialbert.data.hub import load_dataset

    hub = spec.hub
    dsd = load_dataset(hub["name"], hub.get("config"))  # offline when fetched (data.hub)
    splits = {}
    for hub_split, dataset in dsd.items():
        split = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}.get(hub_split)
        if split is None:
            continue
        origin = f"{hub['name']}/{hub_split}"
        for column in (spec.tokens_column, spec.tags_column):
            if column not in dataset.column_names:
                raise ConfigError(f"{origin}: missing column {column!r} (spec fields tokens_column/tags_column); has {dataset.column_names}")
        feature = dataset.features[spec.tags_column]
        names = getattr(getattr(feature, "feature", None), "names", None)
        if names is None:
            raise ConfigError(f"{origin}: column {spec.tags_column!r} is not a sequence of ClassLabel (tag names unknown)")
        examples = [{"tokens": list(row[spec.tokens_column]), "tags": [names[t] for t in row[spec.tags_column]]}
                    for row in dataset]
        splits[split] = RawSplit(examples, origin)
    if "train" not in splits or "dev" not in splits:
        raise ConfigError(f"{hub['name']}: expected train and validation splits; has {list(dsd)}")
    return splits


def read_files(spec: TaskSpec) -> dict[str, RawSplit]:
    """Custom CSV or JSON-lines files (by extension: .csv, .tsv, .jsonl/.json)."""
    return {split: _read_table_file(spec, spec.resolve(path), split) for split, path in spec.files.items()}


def input_files(spec: TaskSpec) -> list[Path]:
    """The local files the spec's reader reads, for a workflow to declare as inputs (editing one
    reruns the task). Only files that exist: a missing one is the reader's error to report, and
    hub sources have none."""
    try:
        if spec.source == "files":
            paths = [spec.resolve(p) for p in spec.files.values()]
        elif spec.source == "glue_dir":
            paths = [path for path, _ in glue_dir_files(spec).values()]
        elif spec.source == "bio_ner_dir":
            paths = list(bio_ner_files(spec).values())
        else:
            return []
    except ConfigError:  # a broken dir: declare what is there, the job reports the rest
        root = spec.resolve(spec.path)
        paths = sorted(root.glob("*.tsv")) if root.is_dir() else []
    return [p for p in dict.fromkeys(paths) if p.is_file()]


def _read_table_file(spec: TaskSpec, path: Path, split: str) -> RawSplit:
    if not path.is_file():
        raise ConfigError(f"{spec.origin}: field 'files.{split}': {path} not found")
    rows = list(iter_jsonl(path) if path.suffix in (".jsonl", ".json") else _iter_csv(path))
    if not rows:
        raise ConfigError(f"{path}: empty file")
    required = list(spec.text_columns)
    kind = spec.task_type
    has_labels = spec.label_column in rows[0][1]
    if split_role(split) != "test" and not has_labels:
        raise ConfigError(f"{path}: line {rows[0][0]}: no label column {spec.label_column!r} (spec field label_column)")
    examples = []
    for lineno, row in rows:
        for column in required + ([spec.label_column] if has_labels else []):
            if column not in row or row[column] is None:
                raise ConfigError(f"{path}: line {lineno}: missing column {column!r}")
        examples.append(kind.read_row(path, lineno, row, required, spec.label_column, has_labels))
    return RawSplit(examples, str(path), has_labels)


def _iter_csv(path: Path) -> Iterable[tuple[int, dict]]:
    delimiter = "\t" if path.suffix == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            return
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise ConfigError(f"{path}: line {reader.line_num}: expected {len(header)} columns, found {len(fields)}")
            yield reader.line_num, dict(zip(header, fields))


READERS = {
    "glue_hub": read_glue_hub,
    "glue_dir": read_glue_dir,
    "bio_ner_dir": read_bio_ner_dir,
    "hub_ner": read_hub_ner,
    "files": read_files,
}


# --------------------------------------------------------------------------------------------
# Labels and the prepared task
# --------------------------------------------------------------------------------------------
@dataclass
class Task:
    """A task ready for fine-tuning: its metadata (task.json) and one Dataset per split."""

    info: dict
    splits: dict[str, "datasets.Dataset"]  # noqa: F821

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def type(self) -> str:
        """The task type's name, as in task.json."""
        return self.info["type"]

    @property
    def task_type(self) -> TaskType:
        """The task type object (everything that depends on the type)."""
        return task_type(self.type)

    @property
    def labels(self) -> list[str] | None:
        return self.info["labels"]

    def splits_with_role(self, role: str) -> list[str]:
        return [s for s, r in self.info["splits"].items() if r == role]


def _order_labels(labels: set[str], spec: TaskSpec) -> list[str]:
    """Deterministic label order: the GLUE table's order (so F1's positive class is right),
    otherwise the task type's (tags: O first then grouped by entity type; else sorted)."""
    if spec.glue_task:
        table = GLUE_TASKS[spec.glue_task].labels
        return [label for label in table if label in labels]
    return spec.task_type.order_labels(labels)


def _label_set(splits: dict[str, RawSplit], spec: TaskSpec) -> list[str] | None:
    """The label set of the training split; checks every other split uses only those labels."""
    kind = spec.task_type
    if not kind.has_label_set:
        return None
    train = splits["train"]
    seen = kind.collect_labels(train.examples)
    if spec.glue_task:
        unknown = seen - set(GLUE_TASKS[spec.glue_task].labels)
        if unknown:
            raise ConfigError(f"{train.origin}: label(s) {sorted(unknown)} are not GLUE {spec.glue_task} labels "
                              f"{list(GLUE_TASKS[spec.glue_task].labels)} (nor their raw forms)")
    labels = _order_labels(seen, spec)
    if len(labels) < kind.min_labels:
        raise ConfigError(f"{train.origin}: only {len(labels)} distinct label(s) {labels} in the training split; "
                          f"need at least {kind.min_labels}")
    for split_name, split in splits.items():
        if split_name == "train" or not split.has_labels:
            continue
        unseen = kind.collect_labels(split.examples) - seen
        if unseen:
            raise ConfigError(f"{split.origin}: label {sorted(unseen)[0]!r} never occurs in the training split "
                              f"({train.origin}); training labels are {labels}")
    return labels


def _to_dataset(split: RawSplit, kind: TaskType, labels: list[str] | None) -> "datasets.Dataset":  # noqa: F821
    """Arrow dataset with the task type's columns (label ids, scores, tag ids); no label column
    when unlabelled."""
    import datasets

    features, columns = kind.arrow_columns(split.examples, split.has_labels, labels)
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def build_task(spec: TaskSpec) -> Task:
    """Read a task from its source into memory (labels mapped to ids from the training split)."""
    if spec.type is None:  # a spec not from parse_task_spec
        spec.type = SOURCE_TYPES.get(spec.source)
    kind = spec.task_type
    raw = READERS[spec.source](spec)
    labels = _label_set(raw, spec)
    if spec.glue_task:
        metric, metric_config = "glue", spec.glue_task
        main_metric = spec.main_metric or GLUE_TASKS[spec.glue_task].main_metric
    else:
        metric, metric_config = kind.metric, kind.metric_config
        main_metric = spec.main_metric or kind.main_metric
    splits = {name: _to_dataset(split, kind, labels) for name, split in raw.items()}
    info = {
        "name": spec.name,
        "type": spec.type,
        "source": spec.source,
        "glue_task": spec.glue_task,
        "main_metric": main_metric,
        "metric": metric,
        "metric_config": metric_config,
        "labels": labels,
        "splits": {name: split_role(name) for name in splits},
        "has_labels": {name: split.has_labels for name, split in raw.items()},
        "origins": {name: split.origin for name, split in raw.items()},
    }
    return Task(info, splits)


def save_task(task: Task, output: str | Path) -> Path:
    """Write a prepared task dir atomically (task.json + one Arrow dir per split)."""
    output = Path(output)
    with atomic_directory(output) as tmp:
        for name, dataset in task.splits.items():
            dataset.save_to_disk(str(tmp / name))
        write_json_atomic(tmp / TASK_FILE, task.info)
    return output


def prepare_task(spec: TaskSpec | str | Path, output: str | Path) -> Path:
    """Read a task from its source and write the prepared task dir."""
    if not isinstance(spec, TaskSpec):
        spec = load_task_spec(spec)
    return save_task(build_task(spec), output)


def load_task(path: str | Path) -> Task:
    """A prepared task dir, or a task spec file (read from its source on the fly)."""
    import datasets

    path = Path(path)
    if path.is_dir():
        info = read_json(path / TASK_FILE, "prepared task description (task.json)")
        try:
            task_type(info.get("type"))
        except ConfigError as e:
            raise ConfigError(f"{path / TASK_FILE}: field 'type': {e}") from None
        splits = {}
        for name in info.get("splits", {}):
            if not (path / name).is_dir():
                raise ConfigError(f"{path}: split dir {name!r} listed in task.json is missing")
            splits[name] = datasets.load_from_disk(str(path / name))
        return Task(info, splits)
    if path.is_file():
        return build_task(load_task_spec(path))
    raise ConfigError(f"{path}: not a prepared task dir nor a task spec file")


# --------------------------------------------------------------------------------------------
# CLI: minialbert prepare-task --spec FILE --output DIR
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("task spec fields (YAML or JSON; relative paths are relative to the spec file's directory):\n"
                     + describe_spec_fields(indent=2))
    parser.add_argument("--spec", required=True, help="task spec file (YAML or JSON; fields below)")
    parser.add_argument("--output", required=True, help="prepared task dir to write")


def run(args: argparse.Namespace) -> int:
    task = build_task(load_task_spec(args.spec))
    save_task(task, args.output)
    sizes = ", ".join(f"{name}: {len(ds)}" for name, ds in task.splits.items())
    print(f"prepared task {task.name} ({task.type}; {sizes}) -> {args.output}")
    return 0
