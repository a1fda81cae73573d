"""Editing a local data file or model file reruns exactly its dependants.

The plan declares the files each job reads (a custom task's CSV files, a GLUE or BioBERT task
dir's files, a local corpus's files, a local model dir's files) as inputs of its rule, so
Snakemake's mtime trigger sees an edit. Fast: the outputs of the tiny workflow are created
empty and recorded with `snakemake --touch`; only dry runs follow.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from minialbert.workflow.plan import load_plan

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "workflow_tiny.yaml"
SCHEMA = REPO / "schemas" / "config.schema.yaml"
FILE_SUFFIXES = (".json", ".csv", ".png")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def dry_run(workdir: Path, *targets: str) -> list[tuple[str, list[str]]]:
    """(rule, outputs) of every job a dry run schedules (`all` has no output)."""
    jobs: list[tuple[str, list[str]]] = []
    for line in snakemake(workdir, "--dry-run", *targets).stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            jobs.append((m.group(1), []))
        elif jobs and (m := re.match(r"^\s+output: (.+)$", line)):
            jobs[-1][1].extend(m.group(1).split(", "))
    return jobs


def scheduled(workdir: Path, *targets: str) -> set[tuple[str, str]]:
    """(rule, first output or '') of every job a dry run schedules."""
    return {(rule, outputs[0] if outputs else "") for rule, outputs in dry_run(workdir, *targets)}


def tiny_with_local_data() -> dict:
    """The tiny workflow plus a custom CSV task, a local baseline model dir and a local corpus."""
    config = yaml.safe_load(TINY.read_text())
    config["tasks"]["custom"] = {"group": "demo", "spec": {
        "source": "files", "type": "single", "files": {"train": "data/train.csv", "dev": "data/dev.csv"},
        "text_columns": ["text"], "label_column": "label"}}
    config["baselines"]["local-bert"] = {"source": "local", "path": "models/local-bert", "modes": ["full"]}
    config["corpora"]["notes"] = {"source": "files", "files": {"paths": ["data/notes/*.txt"], "text_layout": "line"}}
    return config


def write_local_data(root: Path) -> None:
    (root / "data" / "notes").mkdir(parents=True)
    for split in ("train", "dev"):
        (root / "data" / f"{split}.csv").write_text("text,label\na good film,pos\na bad film,neg\n")
    (root / "data" / "notes" / "a.txt").write_text("one note\nanother note\n")
    (root / "models" / "local-bert").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (root / "models" / "local-bert" / name).write_text("{}")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A workdir where every output of the workflow exists and is recorded as up to date."""
    root = tmp_path_factory.mktemp("recorded")
    write_local_data(root)
    (root / "config.yaml").write_text(yaml.safe_dump(tiny_with_local_data(), sort_keys=False))
    for _, outputs in dry_run(root, "all", "results/corpora/notes"):
        for output in outputs:
            path = root / output
            if path.suffix in FILE_SUFFIXES:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
    snakemake(root, "--touch", "all", "results/corpora/notes")
    assert scheduled(root, "all", "results/corpora/notes") == set()
    return root


@pytest.fixture
def up_to_date(recorded, tmp_path) -> Path:
    """A copy of `recorded` (modification times and Snakemake's records kept) for one test to edit."""
    workdir = tmp_path / "workdir"
    shutil.copytree(recorded, workdir, symlinks=True)
    return workdir


def edit(path: Path) -> None:
    time.sleep(0.01)
    with open(path, "a") as f:
        f.write("\n")
    later = time.time() + 2  # clearly newer than the outputs, whatever the file system's resolution
    os.utime(path, (later, later))


AGGREGATE = {("aggregate", "results/summary/runs.csv"), ("all", "")}


def run_metrics(workdir: Path, **which) -> set[tuple[str, str]]:
    config = dict(yaml.safe_load((workdir / "config.yaml").read_text()), check_paths=False)  # relative to workdir
    plan = load_plan(config, SCHEMA)
    return {("finetune", path) for key, path in zip(plan.runs, plan.run_metrics())
            if all(which.get(k) in (None, v) for k, v in zip(("model", "task"), key))}


def test_editing_a_custom_tasks_csv_reruns_its_preparation_and_fine_tunes(up_to_date):
    edit(up_to_date / "data" / "dev.csv")
    expected = {("prepare_task", "results/tasks/custom")} | run_metrics(up_to_date, task="custom") | AGGREGATE
    assert scheduled(up_to_date) == expected


def test_editing_a_local_models_file_reruns_its_fine_tunes_and_efficiency(up_to_date):
    edit(up_to_date / "models" / "local-bert" / "config.json")
    expected = ({("efficiency", "results/efficiency/local-bert.json")} | run_metrics(up_to_date, model="local-bert")
                | AGGREGATE)
    assert scheduled(up_to_date) == expected


def test_editing_a_local_corpus_file_reruns_its_ingestion(up_to_date):
    edit(up_to_date / "data" / "notes" / "a.txt")
    assert scheduled(up_to_date, "results/corpora/notes") == {("ingest_corpus", "results/corpora/notes")}
    assert scheduled(up_to_date) == set()  # nothing else reads it


# --------------------------------------------------------------------------- which files are declared


def plan_with_task(tmp_path: Path, spec: dict):
    config = yaml.safe_load(TINY.read_text())
    config["tasks"] = {"t": {"group": "demo", "spec": spec}}
    return load_plan(config, SCHEMA)


def test_a_glue_dir_declares_the_files_the_reader_reads(tmp_path):
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv", "test_matched.tsv", "README.txt"):
        (tmp_path / name).write_text("x\n")
    plan = plan_with_task(tmp_path, {"source": "glue_dir", "glue_task": "mnli", "path": str(tmp_path)})
    # test_mismatched.tsv is optional and absent: not declared (Snakemake would wait for it)
    assert plan.task_inputs("t") == [str(tmp_path / n) for n in ("train.tsv", "dev_matched.tsv",
                                                                  "dev_mismatched.tsv", "test_matched.tsv")]


def test_a_bio_ner_dir_declares_the_files_the_reader_reads(tmp_path):
    for name in ("train.tsv", "train_dev.tsv", "devel.tsv"):
        (tmp_path / name).write_text("a\tO\n")
    plan = plan_with_task(tmp_path, {"source": "bio_ner_dir", "path": str(tmp_path)})
    assert plan.task_inputs("t") == [str(tmp_path / "train.tsv"), str(tmp_path / "devel.tsv")]
    plan = plan_with_task(tmp_path, {"source": "bio_ner_dir", "path": str(tmp_path), "train_dev": True})
    assert plan.task_inputs("t") == [str(tmp_path / "train_dev.tsv"), str(tmp_path / "devel.tsv")]


def test_hub_sources_declare_no_files_only_their_fetch_step():
    """A hub dataset has no local files to declare: its processing step waits for the fetch step
    (run on the submit host), whose output records what it put in the cache."""
    config = yaml.safe_load(TINY.read_text())
    config["tasks"] = {"t": {"group": "g", "spec": {"source": "glue_hub", "glue_task": "rte"}}}
    config["corpora"]["wiki"] = {"source": "hub", "hub": {"name": "wikimedia/wikipedia", "config": "20231101.en"}}
    plan = load_plan(config, SCHEMA)
    assert plan.task_inputs("t") == ["results/hub/tasks/t.json"]
    assert plan.corpus_inputs("wiki") == ["results/hub/corpora/wiki.json"]


def test_a_local_dataset_dir_read_as_a_hub_corpus_declares_its_files(tmp_path):
    dump = tmp_path / "wikipedia"
    (dump / "20231101.en").mkdir(parents=True)
    (dump / ".cache").mkdir()
    for name in ("README.md", "20231101.en/train-00000-of-00001.parquet", ".cache/lock"):
        (dump / name).write_text("x")
    config = yaml.safe_load(TINY.read_text())
    config["corpora"]["wiki"] = {"source": "hub", "hub": {"name": str(dump), "config": "20231101.en"}}
    plan = load_plan(config, SCHEMA)
    assert plan.corpus_inputs("wiki") == [str(dump / "README.md"), str(dump / "20231101.en/train-00000-of-00001.parquet")]


def test_an_authors_checkpoint_dir_declares_its_files(tmp_path):
    for name in ("config.json", "pytorch_model.bin", "vocab.txt"):
        (tmp_path / name).write_text("x")
    config = yaml.safe_load(TINY.read_text())
    config["baselines"]["authors"] = {"source": "authors", "path": str(tmp_path)}
    config["baselines"]["authors-hub"] = {"source": "authors", "name": "nlpie/miniALBERT-128"}
    plan = load_plan(config, SCHEMA)
    assert plan.import_inputs("authors") == [str(tmp_path / n) for n in ("config.json", "pytorch_model.bin",
                                                                          "vocab.txt")]
    assert plan.import_inputs("authors-hub") == []
