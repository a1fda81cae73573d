"""What each rule's job runs: its job config (built by the plan) -> one command.

`workflow_scripts/run_job.py` calls `run_job(snakemake)` for every rule; the functions here
turn the job config into the command's typed config and call the command in this process,
except multi-GPU training, which is launched through torchrun, and, run locally, the short
jobs of `forkserver.RULES`, which run in a fork of the pre-imported fork server
(`minialbert.workflow.forkserver`) and fall back to this process if it cannot take them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from minialbert.utils import ConfigError, atomic_directory, write_json_atomic


def _demo(job: Any, cfg: dict) -> None:
    from minialbert.demo import DemoSizes, make_demo

    demo = cfg["demo"]
    make_demo(job.output[0], seed=demo.get("seed", 0), sizes=DemoSizes(**(demo.get("sizes") or {})))


def _corpus(job: Any, cfg: dict) -> None:
    from minialbert.data.corpora import ingest_corpus
    from minialbert.workflow.plan import corpus_source

    ingest_corpus(corpus_source(cfg), job.output[0])


def _tokenizer(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import TokenizerConfig
    from minialbert.data.tokenizers import train_tokenizer

    settings = TokenizerConfig.from_dict({k: cfg[k] for k in ("vocab_size", "lowercase")})
    train_tokenizer(cfg["corpus_dir"], job.output[0], vocab_size=settings.vocab_size, lowercase=settings.lowercase)


def _windows(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import WindowsConfig
    from minialbert.data.windows import make_windows

    s = WindowsConfig.from_dict({k: v for k, v in cfg.items() if k not in ("name", "corpus_dir", "tokenizer",
                                                                           "identity")})
    make_windows(cfg["corpus_dir"], cfg["tokenizer"], job.output[0], s.max_length, s.stride,
                 s.max_windows_per_document, s.seed, s.num_proc)


def _task(job: Any, cfg: dict) -> None:
    from minialbert.tasks import parse_task_spec, prepare_task

    spec = dict(cfg["spec"])  # config paths are relative to the working directory
    if isinstance(spec.get("path"), str):
        spec["path"] = os.path.abspath(os.path.expanduser(spec["path"]))
    if isinstance(spec.get("files"), dict):
        spec["files"] = {k: os.path.abspath(os.path.expanduser(v)) if isinstance(v, str) else v
                         for k, v in spec["files"].items()}
    prepare_task(parse_task_spec(spec, origin=f"tasks.{spec.get('name')}.spec"), job.output[0])


def requested_gpus(resources: Any) -> int:
    """GPUs given to this job: the SLURM plugin's `gpu` resource, or `gres: gpu[:type]:N`."""
    resources = dict(resources or {})
    if resources.get("gpu"):
        return int(resources["gpu"])
    gres = str(resources.get("gres") or "")
    if gres.startswith("gpu"):
        count = gres.split(":")[-1]
        return int(count) if count.isdigit() else 1
    return 0


def _train(job: Any, cfg: dict) -> None:
    """distill / pretrain_teacher: in this process, or under torchrun with more than one GPU."""
    import yaml

    command = {"pretrain_teacher": "pretrain-teacher", "distill": "distill"}[job.rule]
    checkpoints = Path(cfg["command"]["training"]["checkpoint_dir"])
    checkpoints.parent.mkdir(parents=True, exist_ok=True)
    config_file = checkpoints.parent / f"{checkpoints.name}.yaml"
    config_file.write_text(yaml.safe_dump(cfg["command"], sort_keys=False))
    gpus = requested_gpus(job.resources)
    if gpus > 1:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "minialbert.cli", command, "--config", str(config_file), "--output", job.output[0]]
        print("[workflow] " + " ".join(argv), flush=True)
        # every BLAS pool, not only OpenMP: N processes x the job's threads each make DDP steps
        # ~40x slower (measured under SLURM on 2 CPUs)
        per_process = str(max(1, int(job.threads) // gpus))
        env = dict(os.environ, OMP_NUM_THREADS=per_process, MKL_NUM_THREADS=per_process,
                   OPENBLAS_NUM_THREADS=per_process)
        subprocess.run(argv, check=True, env=env)
        return
    from minialbert.distill import run_command

    _set_torch_threads(job)
    status = run_command(command, config_file, job.output[0])
    if status:
        raise SystemExit(status)


def _scratch(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import ScratchModelConfig
    from minialbert.distill import init_scratch

    init_scratch(ScratchModelConfig.from_dict(cfg["command"], key="init-scratch"), job.output[0])


def _download(job: Any, cfg: dict) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    kwargs = {"revision": cfg["revision"]} if cfg.get("revision") else {}
    try:  # keep the MLM head where there is one (a teacher needs it); plain encoders otherwise
        model = AutoModelForMaskedLM.from_pretrained(cfg["name"], **kwargs)
    except (ValueError, OSError, KeyError) as e:
        print(f"[workflow] no masked-LM head for {cfg['name']} ({e}); saving the encoder", flush=True)
        model = AutoModel.from_pretrained(cfg["name"], **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(cfg["name"], **kwargs)
    with atomic_directory(job.output[0]) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")


def _import(job: Any, cfg: dict) -> None:
    from minialbert.convert import import_authors_checkpoint

    with atomic_directory(job.output[0]) as tmp:
        import_authors_checkpoint(cfg["source"], tmp / "model")


def _finetune(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import FinetuneConfig
    from minialbert.finetune import finetune

    config = FinetuneConfig.from_dict({**cfg["command"], "output": str(Path(job.output[0]).parent),
                                       "threads": max(1, int(job.threads))}, key="finetune")
    finetune(config)


def _efficiency(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import EfficiencyConfig
    from minialbert.report import measure_efficiency

    settings = EfficiencyConfig.from_dict(cfg["command"], key="report.efficiency")
    result = {"model": cfg["name"], **measure_efficiency(cfg["model_dir"], settings)}
    write_json_atomic(job.output[0], result)


def _aggregate(job: Any, cfg: dict) -> None:
    from minialbert.report import aggregate

    aggregate(run_files=list(job.input.runs), efficiency_files=list(job.input.efficiency),
              output_dir=Path(job.output.table).parent, models=cfg["models"], tasks=cfg["tasks"],
              train_logs=cfg["train_logs"])


def _set_torch_threads(job: Any) -> None:
    import torch

    torch.set_num_threads(max(1, int(job.threads)))


RUNNERS: dict[str, Callable[[Any, dict], None]] = {
    "make_demo": _demo,
    "ingest_corpus": _corpus,
    "train_tokenizer": _tokenizer,
    "make_windows": _windows,
    "prepare_task": _task,
    "pretrain_teacher": _train,
    "distill": _train,
    "init_scratch": _scratch,
    "download_model": _download,
    "import_authors_checkpoint": _import,
    "finetune": _finetune,
    "efficiency": _efficiency,
    "aggregate": _aggregate,
}


def run_job(job: Any) -> None:
    """Run the command of `job` (Snakemake's `snakemake` object): through the fork server for
    its rules when it is enabled and can take the job, else in this process."""
    from minialbert.workflow import forkserver

    if job.rule in forkserver.RULES and forkserver.enabled():
        status = forkserver.submit(describe(job))
        if status is not None:
            if status:
                raise SystemExit(status)
            return
    run_in_process(job)


def describe(job: Any) -> dict:
    """The parts of a `snakemake` object that the fork server's rules use, as JSON data."""
    return {"rule": job.rule, "output": list(job.output), "threads": int(job.threads),
            "job_config": job.params.job_config}


def job_from_description(description: dict) -> SimpleNamespace:
    """`describe`'s data back as an object that `run_in_process` takes like a `snakemake` object."""
    return SimpleNamespace(rule=description["rule"], output=description["output"], threads=description["threads"],
                           params=SimpleNamespace(job_config=description["job_config"]))


def run_in_process(job: Any) -> None:
    """Run the command of `job` (Snakemake's `snakemake` object: rule, input, output, params,
    threads, resources) in this process; a config error exits with status 2 and the message,
    no traceback."""
    cfg = json.loads(job.params.job_config)
    print(f"[workflow] rule {job.rule}, job config:\n{json.dumps(cfg, indent=2, sort_keys=True)}", flush=True)
    if job.rule in ("finetune", "efficiency"):
        _set_torch_threads(job)
    try:
        RUNNERS[job.rule](job, cfg)
    except ConfigError as e:
        print(f"minialbert {job.rule}: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
