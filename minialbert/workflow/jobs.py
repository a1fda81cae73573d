"""What each rule runs: one runner per command, job config (built by the plan) -> the command.

A rule's script (workflow_scripts/<command>.py) names its runner here as "module:function" and
hands it to `minialbert.workflow.launch`, which calls it in this process or, for the rules whose
script says so, in a fork of the pre-imported fork server. A runner takes Snakemake's
`snakemake` object (or anything with its rule, input, output, params, threads, resources);
`@runner` gives it the parsed job config, logs it and turns a config error into exit status 2.
Multi-GPU training is launched through torchrun.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from minialbert.utils import ConfigError, atomic_directory, write_json_atomic


def runner(command: Callable[[Any, dict], None]) -> Callable[[Any], None]:
    """`command(job, cfg)` as a rule's runner `f(job)`: cfg is the job's config (params.job_config),
    printed to the job's log first; a config error exits with status 2 and the message, no traceback."""

    @functools.wraps(command)
    def run(job: Any) -> None:
        cfg = json.loads(job.params.job_config)
        print(f"[workflow] rule {job.rule}, job config:\n{json.dumps(cfg, indent=2, sort_keys=True)}", flush=True)
        try:
            command(job, cfg)
        except ConfigError as e:
            print(f"minialbert {job.rule}: error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    return run


@runner
def make_demo(job: Any, cfg: dict) -> None:
    from minialbert import demo

    settings = cfg["demo"]
    demo.make_demo(job.output[0], seed=settings.get("seed", 0), sizes=demo.DemoSizes(**(settings.get("sizes") or {})))


@runner
def fetch_hub_dataset(job: Any, cfg: dict) -> None:
    if cfg.get("hf_home"):  # before huggingface_hub is imported: it reads HF_HOME then
        os.environ["HF_HOME"] = os.path.abspath(os.path.expanduser(cfg["hf_home"]))
    from minialbert.data.hub import fetch_dataset

    record = fetch_dataset(cfg["repo"], cfg.get("config"), cfg.get("revision"))
    print(f"[workflow] {cfg['repo']} ({cfg.get('config')}) at commit {record['commit']}: {record['snapshot']}",
          flush=True)
    write_json_atomic(job.output[0], record)


def _offline_hub_dir(cfg: dict) -> str | None:
    """The local snapshot dir of the hub dataset this job reads (fetched by fetch_hub_dataset),
    with the hub and datasets switched to offline mode and the dataset's reads pointed at its
    cached files (minialbert.data.hub.load_dataset); None if it reads no hub dataset."""
    if not cfg.get("hub_fetch"):
        return None
    from minialbert.data.hub import go_offline

    return go_offline(cfg["hub_fetch"])


@runner
def ingest_corpus(job: Any, cfg: dict) -> None:
    _offline_hub_dir(cfg)
    from minialbert.data import corpora
    from minialbert.workflow.plan import corpus_source

    corpora.ingest_corpus(corpus_source(cfg), job.output[0])


@runner
def train_tokenizer(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import TokenizerConfig
    from minialbert.data import tokenizers

    settings = TokenizerConfig.from_dict({k: cfg[k] for k in ("vocab_size", "lowercase")})
    tokenizers.train_tokenizer(cfg["corpus_dir"], job.output[0], vocab_size=settings.vocab_size,
                               lowercase=settings.lowercase)


@runner
def make_windows(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import WindowsConfig
    from minialbert.data import windows

    s = WindowsConfig.from_dict({k: v for k, v in cfg.items() if k not in ("name", "corpus_dir", "tokenizer",
                                                                           "identity")})
    windows.make_windows(cfg["corpus_dir"], cfg["tokenizer"], job.output[0], s.max_length, s.stride,
                 s.max_windows_per_document, s.seed, s.num_proc)


@runner
def prepare_task(job: Any, cfg: dict) -> None:
    _offline_hub_dir(cfg)
    from minialbert import tasks

    spec = dict(cfg["spec"])  # config paths are relative to the working directory
    if isinstance(spec.get("path"), str):
        spec["path"] = os.path.abspath(os.path.expanduser(spec["path"]))
    if isinstance(spec.get("files"), dict):
        spec["files"] = {k: os.path.abspath(os.path.expanduser(v)) if isinstance(v, str) else v
                         for k, v in spec["files"].items()}
    tasks.prepare_task(tasks.parse_task_spec(spec, origin=f"tasks.{spec.get('name')}.spec"), job.output[0])


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


@runner
def pretrain_teacher(job: Any, cfg: dict) -> None:
    _train(job, cfg, "pretrain-teacher")


@runner
def distill(job: Any, cfg: dict) -> None:
    _train(job, cfg, "distill")


def _train(job: Any, cfg: dict, command: str) -> None:
    """`minialbert <command>` (a training command): in this process, or under torchrun with more than one GPU."""
    import yaml

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


@runner
def init_scratch(job: Any, cfg: dict) -> None:
    import minialbert.distill
    from minialbert.command_configs import ScratchModelConfig

    minialbert.distill.init_scratch(ScratchModelConfig.from_dict(cfg["command"], key="init-scratch"), job.output[0])


@runner
def download_model(job: Any, cfg: dict) -> None:
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


@runner
def import_authors_checkpoint(job: Any, cfg: dict) -> None:
    from minialbert import convert

    with atomic_directory(job.output[0]) as tmp:
        convert.import_authors_checkpoint(cfg["source"], tmp / "model")


@runner
def finetune(job: Any, cfg: dict) -> None:
    if restore_finished_run(job):
        return
    from minialbert import finetune as fine_tuning
    from minialbert.command_configs import FinetuneConfig

    _set_torch_threads(job)
    config = FinetuneConfig.from_dict({**cfg["command"], "output": str(Path(job.output[0]).parent),
                                       "threads": max(1, int(job.threads))}, key="finetune")
    metrics = fine_tuning.finetune(config)
    print(f"[workflow] trained {job.output[0]}: dev {metrics['main_metric']} {metrics['main_value']}", flush=True)
    record_finished_run(job)


# A packed allocation (rules/finetune.smk) that fails, is cancelled or hits its time limit is
# retried whole, and Snakemake first deletes the metrics.json of every run in it, also of those
# that had finished. So a finished run leaves a record beside its metrics.json: a copy of it, its
# job config and the Snakemake invocation that ran it. A rerun of the same job config in the same
# invocation restores metrics.json from it instead of training again; a later invocation (e.g.
# --forcerun after a code change) trains anew. The invocation is the SLURM job name, which the
# SLURM executor plugin sets to one id per Snakemake run for all its jobs (`squeue --name`); off
# SLURM a run is never packed and nothing is restored.
FINISHED_RECORD = "finished.json"


def _invocation() -> str | None:
    return os.environ.get("SLURM_JOB_NAME") if os.environ.get("SLURM_JOB_ID") else None


def restore_finished_run(job: Any) -> bool:
    """Restore metrics.json from the run's record if this invocation already finished this very
    job config (a retried packed allocation); True if it did."""
    invocation = _invocation()
    record_file = Path(job.output[0]).with_name(FINISHED_RECORD)
    if invocation is None or not record_file.is_file():
        return False
    try:
        record = json.loads(record_file.read_text())
    except (OSError, ValueError):
        return False
    if record.get("invocation") != invocation or record.get("job_config") != job.params.job_config:
        return False
    _write_text_atomic(job.output[0], record["metrics"])
    print(f"[workflow] restored {job.output[0]}: this run finished earlier in this Snakemake run ({invocation}, "
          f"SLURM job {record.get('slurm_job')}); not trained again", flush=True)
    return True


def record_finished_run(job: Any) -> None:
    """The record restore_finished_run reads (only under SLURM)."""
    invocation = _invocation()
    if invocation is None:
        return
    record = {"invocation": invocation, "slurm_job": os.environ.get("SLURM_JOB_ID"),
              "job_config": job.params.job_config, "metrics": Path(job.output[0]).read_text()}
    write_json_atomic(Path(job.output[0]).with_name(FINISHED_RECORD), record)


def _write_text_atomic(path: str | Path, text: str) -> None:
    """`text` (the bytes of the metrics.json the run wrote) to `path`, through a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.restore-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@runner
def efficiency(job: Any, cfg: dict) -> None:
    from minialbert.command_configs import EfficiencyConfig
    from minialbert.report import measure_efficiency

    _set_torch_threads(job)
    settings = EfficiencyConfig.from_dict(cfg["command"], key="report.efficiency")
    result = {"model": cfg["name"], **measure_efficiency(cfg["model_dir"], settings)}
    write_json_atomic(job.output[0], result)


@runner
def exit_timing(job: Any, cfg: dict) -> None:
    from minialbert.exit_timing import measure

    _set_torch_threads(job)
    result = measure(cfg["run_dir"], cfg["task"], cfg["teacher_dir"], examples=cfg["examples"],
                     max_length=cfg["max_length"])
    write_json_atomic(job.output[0], result)


@runner
def exits_summary(job: Any, cfg: dict) -> None:
    from minialbert.exit_timing import summarise

    summarise(cfg["runs"], job.output.table, Path(job.output.table).parent, cfg["tasks"])


@runner
def aggregate(job: Any, cfg: dict) -> None:
    from minialbert import report

    report.aggregate(run_files=list(job.input.runs), efficiency_files=list(job.input.efficiency),
                     output_dir=Path(job.output.table).parent, models=cfg["models"], tasks=cfg["tasks"],
                     train_logs=cfg["train_logs"])


def _set_torch_threads(job: Any) -> None:
    import torch

    torch.set_num_threads(max(1, int(job.threads)))
