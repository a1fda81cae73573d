"""Hub datasets fetched on the submit host, read offline on compute nodes (minialbert.data.hub).

There is no internet here: the fetch step's result, a Hugging Face cache, is built by hand in
the layout `huggingface_hub.snapshot_download` leaves (blobs, snapshots/<commit> of relative
symlinks, refs/main), and the processing steps (the ingest_corpus and prepare_task runners) run
in a subprocess whose sockets all fail, so they can only read that cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from minialbert.data.hub import config_patterns
from minialbert.workflow.plan import load_plan

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GLUE_CARD = textwrap.dedent("""\
    ---
    configs:
    - config_name: cola
      data_files:
      - split: train
        path: cola/train-*
    - config_name: sst2
      data_files:
      - split: train
        path: sst2/train-*
      - split: validation
        path: sst2/validation-*
      - split: test
        path: sst2/test-*
    ---
    # GLUE (a stand-in)
    """)
WIKI_CARD = textwrap.dedent("""\
    ---
    configs:
    - config_name: 20231101.xx
      data_files:
      - split: train
        path: 20231101.xx/train-*
    ---
    """)


def parquet_bytes(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue().to_pybytes()


def lay_out_snapshot(hf_home: Path, repo: str, files: dict[str, bytes]) -> Path:
    """The cache huggingface_hub leaves after snapshot_download(repo, repo_type="dataset"):
    content-addressed blobs, a snapshot dir of relative symlinks to them, refs/main."""
    root = hf_home / "hub" / f"datasets--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    for path, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


def fetch_record(hf_home: Path, repo: str, config: str, snapshot: Path, patterns: list[str]) -> dict:
    """What rule fetch_hub_dataset writes (minialbert.data.hub.fetch_dataset)."""
    return {"repo": repo, "config": config, "revision": None, "commit": COMMIT, "allow_patterns": patterns,
            "hf_home": str(hf_home), "snapshot": str(snapshot)}


@pytest.fixture
def hub_world(tmp_path):
    """A cache holding GLUE's sst2 (train, validation, unlabelled test) and a small Wikipedia
    config, their fetch records, and a workflow config that reads both from the hub."""
    hf_home = tmp_path / "hf"
    sentences = [f"sentence number {i} is {'good' if i % 2 else 'bad'}" for i in range(12)]
    glue = lay_out_snapshot(hf_home, "nyu-mll/glue", {
        "README.md": GLUE_CARD.encode(),
        "sst2/train-00000-of-00001.parquet": parquet_bytes(
            {"sentence": sentences[:8], "label": [i % 2 for i in range(8)], "idx": list(range(8))}),
        "sst2/validation-00000-of-00001.parquet": parquet_bytes(
            {"sentence": sentences[8:10], "label": [0, 1], "idx": [0, 1]}),
        "sst2/test-00000-of-00001.parquet": parquet_bytes(
            {"sentence": sentences[10:], "label": [-1, -1], "idx": [0, 1]}),
    })
    wiki = lay_out_snapshot(hf_home, "wikimedia/wikipedia", {
        "README.md": WIKI_CARD.encode(),
        "20231101.xx/train-00000-of-00001.parquet": parquet_bytes(
            {"id": ["1", "2", "3"], "title": ["A", "B", "C"], "text": ["Alpha is a letter.", "", "Gamma too."]}),
    })
    work = tmp_path / "work"
    (work / "results" / "hub" / "tasks").mkdir(parents=True)
    (work / "results" / "hub" / "corpora").mkdir(parents=True)
    (work / "results" / "hub" / "tasks" / "sst2.json").write_text(json.dumps(fetch_record(
        hf_home, "nyu-mll/glue", "sst2", glue, config_patterns({"configs": _card(GLUE_CARD)}, "sst2"))))
    (work / "results" / "hub" / "corpora" / "wiki.json").write_text(json.dumps(fetch_record(
        hf_home, "wikimedia/wikipedia", "20231101.xx", wiki, ["README.md", "20231101.xx/train-*"])))
    import yaml

    config = yaml.safe_load((REPO / "tests" / "workflow_tiny.yaml").read_text())  # plus a hub corpus and task
    config["corpora"]["wiki"] = {"source": "hub", "hub": {"name": "wikimedia/wikipedia", "config": "20231101.xx"}}
    config["tasks"]["sst2"] = {"group": "glue", "spec": {"source": "glue_hub", "glue_task": "sst2"}}
    config["hf_home"] = str(hf_home)
    return work, hf_home, config


def _card(text: str) -> list:
    import yaml

    return yaml.safe_load(text.split("---")[1])["configs"]


def run_offline(work: Path, runner: str, output: str, job_config: dict) -> subprocess.CompletedProcess:
    """The runner as the processing job runs it, in a process whose every socket connect fails
    and whose environment names no Hugging Face home or offline switch (the job sets them)."""
    code = textwrap.dedent(f"""
        import socket, json, sys
        def refuse(*args, **kwargs):
            raise OSError("network access in an offline processing step")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        from types import SimpleNamespace
        from minialbert.workflow import jobs
        job = SimpleNamespace(rule={runner!r}, output=[{output!r}], threads=1, resources={{}},
                              params=SimpleNamespace(job_config=json.dumps({job_config!r})))
        getattr(jobs, {runner!r})(job)
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["HOME"] = str(work)  # nothing under the real home (its default cache) is read either
    return subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)


def test_config_patterns_take_only_the_configs_files():
    configs = {"configs": _card(GLUE_CARD)}
    assert config_patterns(configs, "sst2") == ["README.md", "sst2/train-*", "sst2/validation-*", "sst2/test-*"]
    assert config_patterns(configs, "cola") == ["README.md", "cola/train-*"]
    assert config_patterns(configs, "mnli") is None  # not declared: fetch the whole repo
    assert config_patterns({}, "sst2") is None
    assert config_patterns(configs, None) is None


def test_plan_fetches_hub_datasets_before_reading_them(hub_world):
    work, hf_home, config = hub_world
    plan = load_plan(config, REPO / "schemas" / "config.schema.yaml")
    assert plan.hub_fetches() == [("corpora", "wiki"), ("tasks", "sst2")]
    assert plan.task_inputs("sst2") == ["results/hub/tasks/sst2.json"]
    assert plan.corpus_inputs("wiki") == ["results/hub/corpora/wiki.json"]
    assert plan.fetch_job("tasks", "sst2") == {"repo": "nyu-mll/glue", "config": "sst2", "revision": None,
                                               "hf_home": str(hf_home)}
    assert plan.task_job("sst2")["hub_fetch"] == "results/hub/tasks/sst2.json"


def test_offline_processing_reads_only_the_cache(hub_world):
    work, hf_home, config = hub_world
    plan = load_plan(config, REPO / "schemas" / "config.schema.yaml")

    proc = run_offline(work, "prepare_task", "results/tasks/sst2", plan.task_job("sst2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import datasets

    rows = {split: datasets.load_from_disk(str(work / "results" / "tasks" / "sst2" / split)).num_rows
            for split in ("train", "dev", "test")}
    assert rows == {"train": 8, "dev": 2, "test": 2}
    assert "HF_HUB_OFFLINE" not in os.environ  # the test's own process stayed as it was

    proc = run_offline(work, "ingest_corpus", "results/corpora/wiki", plan.corpus_job("wiki"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    corpus = datasets.load_from_disk(str(work / "results" / "corpora" / "wiki"))
    assert sorted(corpus["text"]) == ["Alpha is a letter.", "Gamma too."]  # the blank document dropped
    # everything the processing steps cached went under the configured HF_HOME
    assert not (work / ".cache").exists()


def test_offline_processing_without_the_fetched_files_names_the_cache(hub_world):
    work, hf_home, config = hub_world
    plan = load_plan(config, REPO / "schemas" / "config.schema.yaml")
    root = hf_home / "hub" / "datasets--nyu-mll--glue"
    for link in sorted((root / "snapshots").rglob("*"), reverse=True):
        link.unlink() if not link.is_dir() or link.is_symlink() else link.rmdir()
    (root / "snapshots").rmdir()
    proc = run_offline(work, "prepare_task", "results/tasks/sst2", plan.task_job("sst2"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"is not in the Hugging Face cache under HF_HOME={hf_home}" in proc.stderr
    assert not (work / "results" / "tasks" / "sst2").exists()
