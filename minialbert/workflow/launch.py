"""Where a rule's job runs: the runner its script names, in this process or in a fork of the
fork server.

Each rule's script (workflow_scripts/<command>.py) calls `launch(snakemake, target)` with its
runner as "module:function" (the runners are in minialbert.workflow.jobs); the scripts of the
short jobs that are mostly imports (fine-tuning, efficiency) pass `forkserver=True`. Such a job
goes to the fork server (minialbert.workflow.forkserver) when it is enabled (run locally on
Linux, not under SLURM, MINIALBERT_FORKSERVER not 0) and can take it; otherwise the runner runs
here. This module imports neither torch nor the runners' module until a job runs in-process.
"""

from __future__ import annotations

import pkgutil
from typing import Any

from minialbert.workflow import forkserver as fork_server


def launch(job: Any, target: str, *, forkserver: bool = False) -> None:
    """Run `target` ("module:function", a runner taking the `snakemake` object) on `job`: in a
    fork of the fork server if `forkserver` and the server takes it, else in this process."""
    if forkserver and fork_server.enabled():
        status = fork_server.submit(target, job)
        if status is not None:
            if status:
                raise SystemExit(status)
            return
    pkgutil.resolve_name(target)(job)
