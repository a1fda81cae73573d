"""Shared by the workflow scripts: log redirection, thread settings, and the launch of the
runner a rule's script names.

Snakemake runs each script as `python <copy of the script>` with a `snakemake` object
injected; the scripts import this module from their own folder (snakemake.scriptdir). One
script per command, named like its rule: `run(snakemake, "<module>:<runner>")`.
"""

from __future__ import annotations

import glob
import os
import sys
from pathlib import Path


def run(snakemake, target: str, forkserver: bool = False) -> None:
    """The job: its output to its log, then the runner `target` ("module:function") on it, in a
    fork of the fork server if `forkserver` (see minialbert.workflow.launch)."""
    start(snakemake)
    from minialbert.workflow.launch import launch

    launch(snakemake, target, forkserver=forkserver)


def start(snakemake) -> None:
    """Send stdout and stderr (also of child processes) to the job's log; set thread counts."""
    repo = str(Path(snakemake.scriptdir).resolve().parent)
    if repo not in sys.path:
        sys.path.insert(1, repo)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    if snakemake.log:
        log = Path(snakemake.log[0])
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_attempt_log(log)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    threads = str(max(1, int(snakemake.threads)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
        os.environ.setdefault(var, threads if var != "TOKENIZERS_PARALLELISM" else "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _open_attempt_log(log: Path) -> int:
    """Snakemake deletes a job's log before every attempt (retry, SLURM requeue): write each
    attempt to its own <name>.attempt<N>.log (N counts all runs of this job), headed by a line
    naming it, with the declared log a hard link to the current one."""
    stem = log.name[: -len(log.suffix)] if log.suffix else log.name
    n = 1 + len(list(log.parent.glob(f"{glob.escape(stem)}.attempt*{log.suffix}")))
    attempt = log.with_name(f"{stem}.attempt{n}{log.suffix}")
    fd = os.open(attempt, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        log.unlink(missing_ok=True)
        os.link(attempt, log)
    except OSError:  # no hard links here: the declared log alone, as before
        os.close(fd)
        return os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # a requeued SLURM job's runs share the job id (SLURM_RESTART_COUNT does not reach the step)
    job = os.environ.get("SLURM_JOB_ID")
    os.write(fd, f"=== attempt {n} ({f'SLURM job {job}' if job else f'pid {os.getpid()}'}) ===\n".encode())
    return fd
