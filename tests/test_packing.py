"""Packed fine-tuning allocations: the profile's packing settings, and a retried allocation that
restores its finished runs instead of training them again (minialbert.workflow.jobs).

The packing itself is Snakemake's (job groups); scripts/test-slurm.sh runs it on a real SLURM
cluster (a cancelled allocation, a seed added, a packed run retrained alone with the same scores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from minialbert.workflow import jobs

REPO = Path(__file__).resolve().parent.parent
METRICS = '{\n  "dev": {"accuracy": 0.5}\n}\n'


def fake_job(tmp_path: Path, job_config: str = '{"command": {"seed": 0}}') -> SimpleNamespace:
    out = tmp_path / "results" / "finetune" / "m" / "sst2" / "full" / "lr0.001_seed0" / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(rule="finetune", output=[str(out)], threads=1, resources={},
                           params=SimpleNamespace(job_config=job_config))


def in_allocation(monkeypatch, invocation: str, slurm_job: str = "41") -> None:
    monkeypatch.setenv("SLURM_JOB_ID", slurm_job)
    monkeypatch.setenv("SLURM_JOB_NAME", invocation)


def test_a_finished_run_is_restored_in_the_same_invocation(tmp_path, monkeypatch, capsys):
    job = fake_job(tmp_path)
    in_allocation(monkeypatch, "run-uuid-1")
    Path(job.output[0]).write_text(METRICS)
    jobs.record_finished_run(job)
    Path(job.output[0]).unlink()  # what Snakemake does to every run of a failed allocation
    in_allocation(monkeypatch, "run-uuid-1", slurm_job="42")  # the retry: another allocation, same run
    assert jobs.restore_finished_run(job)
    assert Path(job.output[0]).read_text() == METRICS
    assert "not trained again" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["invocation", "job_config", "off_slurm"])
def test_anything_else_trains_again(tmp_path, monkeypatch, change):
    """A later Snakemake run (--forcerun after a code change), another job config, or no SLURM."""
    job = fake_job(tmp_path)
    in_allocation(monkeypatch, "run-uuid-1")
    Path(job.output[0]).write_text(METRICS)
    jobs.record_finished_run(job)
    Path(job.output[0]).unlink()
    if change == "invocation":
        in_allocation(monkeypatch, "run-uuid-2")
    elif change == "job_config":
        job.params.job_config = '{"command": {"seed": 1}}'
    else:
        monkeypatch.delenv("SLURM_JOB_ID")
    assert not jobs.restore_finished_run(job)
    assert not Path(job.output[0]).exists()


def test_off_slurm_no_record_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    job = fake_job(tmp_path)
    Path(job.output[0]).write_text(METRICS)
    jobs.record_finished_run(job)
    assert not Path(job.output[0]).with_name(jobs.FINISHED_RECORD).exists()


def test_the_runner_restores_without_importing_torch(tmp_path):
    """A restored run costs no torch import (a retried allocation's finished runs take seconds)."""
    job = fake_job(tmp_path, job_config=json.dumps({"command": {"seed": 0}}))
    record = {"invocation": "run-uuid-1", "slurm_job": "41", "job_config": job.params.job_config, "metrics": METRICS}
    Path(job.output[0]).with_name(jobs.FINISHED_RECORD).write_text(json.dumps(record))
    code = (
        "import json, os, sys\n"
        "from types import SimpleNamespace\n"
        "from minialbert.workflow import jobs\n"
        f"job = SimpleNamespace(rule='finetune', output=[{job.output[0]!r}], threads=1, resources={{}},\n"
        f"                      params=SimpleNamespace(job_config={job.params.job_config!r}))\n"
        "jobs.finetune(job)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "run-uuid-1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Path(job.output[0]).read_text() == METRICS


def test_the_profiles_pack_fine_tuning_runs_per_model():
    for name in ("slurm", "slurm-local"):
        profile = yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())
        runs = profile["x-cluster"]["finetune_runs_per_allocation"]
        assert profile["group-components"] == {"finetune-{model}": runs} and runs >= 4
        # one slot per allocation, counted per allocation: its runs one after another on its GPU
        assert profile["resources"] == {"finetune_slot": 1}
        assert profile["set-resource-scopes"] == {"finetune_slot": "local"}
        finetune = profile["set-resources"]["finetune"]
        assert finetune["finetune_slot"] == 1 and finetune["gpu"] == 1
        assert finetune["runtime"] == profile["x-cluster"]["finetune_minutes_per_run"]
    assert 'group:\n        "finetune-{model}"' in (REPO / "rules" / "finetune.smk").read_text()
