"""The examples of the docs' "Your own data and models" (examples/own-data): the task spec file
prepares, and the workflow config validates, declares its data files as inputs, ingests its
corpus, reads its tasks and dry-runs; so the docs and the examples cannot drift apart."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from minialbert.data.corpora import ingest_corpus
from minialbert.tasks import build_task, load_task_spec, parse_task_spec
from minialbert.workflow.plan import corpus_source, load_plan

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own-data"
SCHEMA = REPO / "schemas" / "config.schema.yaml"


def test_the_task_spec_file_prepares(tmp_path):
    task = build_task(load_task_spec(EXAMPLE / "reviews.yaml"))
    assert task.labels == ["negative", "positive"]
    assert {name: len(split) for name, split in task.splits.items()} == {"train": 6, "dev": 2, "test": 1}
    assert task.info["has_labels"]["test"] is False


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A copy of the example where snakemake would run, with a stand-in for the user's teacher dir."""
    shutil.copytree(EXAMPLE, tmp_path / "examples" / "own-data")
    teacher = tmp_path / "examples" / "own-data" / "models" / "my-bert"
    teacher.mkdir(parents=True)
    (teacher / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "hidden_act": "gelu", "vocab_size": 100}))
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (teacher / name).write_text("stand-in")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_workflow_config_reads_its_files_and_declares_them(workdir):
    plan = load_plan(yaml.safe_load((EXAMPLE / "config.yaml").read_text()), SCHEMA)
    root = "examples/own-data"
    assert plan.task_inputs("reviews") == [f"{root}/reviews/{s}.csv" for s in ("train", "dev", "test")]
    assert plan.task_inputs("pairs") == [f"{root}/pairs/{s}.jsonl" for s in ("train", "dev")]
    assert plan.corpus_inputs("notes") == [f"{root}/notes/part-1.txt", f"{root}/notes/part-2.txt"]
    assert plan.models["my-bert"].inputs == [f"{root}/models/my-bert/{n}" for n in
                                             ("config.json", "model.safetensors", "tokenizer.json",
                                              "tokenizer_config.json")]
    corpus = ingest_corpus(corpus_source(plan.corpus_job("notes")), workdir / "corpus")
    assert len(corpus) == 4
    pairs = build_task(parse_task_spec(plan.task_job("pairs")["spec"]))
    assert pairs.type == "pair" and pairs.labels == ["contradiction", "entailment"]


def test_the_workflow_config_dry_runs(workdir):
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "--configfile", "examples/own-data/config.yaml", "--dry-run"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    for job in ("prepare_task", "ingest_corpus", "make_windows", "distill", "finetune", "aggregate"):
        assert f"rule {job}:" in proc.stdout
