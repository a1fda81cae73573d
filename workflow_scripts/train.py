"""Pretrain a teacher (`minialbert pretrain-teacher`) or distil a student (`minialbert distill`).

With more than one GPU (resource `gpu` or `gres: gpu:N`, set by the cluster profile) the
command runs under torchrun (`python -m torch.distributed.run --nproc_per_node N`, one
process per GPU, DDP); otherwise in this process. Checkpoints go to the job's
checkpoint_dir, outside the declared output, so a restarted job resumes from them.
"""

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir)  # noqa: F821 (injected by Snakemake)
from _common import cli, set_torch_threads, start, write_yaml  # noqa: E402


def requested_gpus(resources) -> int:
    """GPUs given to this job: the SLURM plugin's `gpu` resource, or `gres: gpu[:type]:N`."""
    if resources.get("gpu"):
        return int(resources.get("gpu"))
    gres = str(resources.get("gres") or "")
    if gres.startswith("gpu"):
        count = gres.split(":")[-1]
        return int(count) if count.isdigit() else 1
    return 0


cfg = start(snakemake)  # noqa: F821
out = snakemake.output[0]  # noqa: F821
command = {"pretrain_teacher": "pretrain-teacher", "distill": "distill"}[snakemake.rule]  # noqa: F821
checkpoints = Path(cfg["command"]["training"]["checkpoint_dir"])
config_file = write_yaml(checkpoints.parent / f"{checkpoints.name}.yaml", cfg["command"])
gpus = requested_gpus(snakemake.resources)  # noqa: F821

if gpus > 1:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "minialbert.cli", command, "--config", str(config_file), "--output", out]
    print("[workflow] " + " ".join(argv), flush=True)
    repo = str(Path(snakemake.scriptdir).resolve().parent)  # noqa: F821
    per_process = str(max(1, int(snakemake.threads) // gpus))  # noqa: F821
    # all BLAS pools, not only OpenMP: Snakemake sets MKL/OpenBLAS threads to the job's threads,
    # and N processes x that many spinning threads make DDP steps ~40x slower (measured on 2 CPUs)
    env = dict(os.environ, OMP_NUM_THREADS=per_process, MKL_NUM_THREADS=per_process,
               OPENBLAS_NUM_THREADS=per_process,
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    subprocess.run(argv, check=True, env=env)
else:
    set_torch_threads(snakemake)  # noqa: F821
    cli(command, "--config", config_file, "--output", out)
