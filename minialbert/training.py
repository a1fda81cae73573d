"""The training loop shared by `minialbert distill` and `minialbert pretrain-teacher`.

A plain PyTorch loop (no Trainer, no accelerate), read top to bottom as three stages that
`run_training` runs in order, on a typed `TrainingConfig`:

- `prepare_loop`: device and DDP, AdamW (no weight decay on biases and LayerNorm weights, i.e. every
  parameter with fewer than two dimensions), linear warm-up then linear decay to zero, the
  data (`minialbert.data.mlm`: deterministic global batches split over the processes and
  gradient accumulation, `BatchLayout`, with per-micro-batch masking seeds), and the resume
  from the latest checkpoint (`minialbert.checkpoints`), refused when it was written by a
  different config or completed, and placed by global batches on any number of processes
  that can split the global batch;
- `fit`: optimizer steps with gradient accumulation and clipping up to `max_steps` or
  `epochs`; one all-reduce per step; a stop with an error naming the step and the loss
  component when a loss is NaN/inf (before the bad update, so the last checkpoint stays
  good); periodic checkpoints; SIGTERM -> checkpoint -> exit; a tqdm bar and a JSONL log of
  every loss component at each logging step;
- `finish`: the output model dir (atomically) and metrics.json (final loss components,
  steps, tokens seen, wall time, tokens/s, peak memory, resolved config and its hash), then
  the checkpoints are removed (or marked finished when kept): a rerun starts at step 0.

`training.batch_size` is the global batch: the same config takes the same optimizer steps on
1, 2 or 4 processes. DDP runs under `torchrun --nproc_per_node N` (gloo on CPU, nccl on GPU;
only rank 0 writes), with mixed precision on GPU by `minialbert.precision`'s rule. What
differs between distillation and teacher pre-training is passed in as a `TrainingJob`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn

from minialbert.command_configs import TrainingConfig
from minialbert.host_memory import retain_freed_memory
from minialbert.optim import build_optimizer, linear_schedule
from minialbert.plots import read_train_log
from minialbert.checkpoints import (
    TrainState,
    checkpoint_layout,
    clear_checkpoints,
    finish_checkpoints,
    finished_run,
    latest_checkpoint,
    load_checkpoint,
    resume_identity,
    rng_state,
    save_checkpoint,
)
from minialbert.data.mlm import WINDOW_COLUMNS, ResumableBatches, SeededMLMCollator, TaggedRows, longest_window
from minialbert.flops import PERF_FIELDS, distillation_step_flops, peak_flops
from minialbert.precision import Precision, choose_precision, enable_tf32
from minialbert.utils import ConfigError, atomic_directory, config_hash, write_json_atomic

logger = logging.getLogger("minialbert.training")


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the message names the step and component."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and the run stopped early (restart to resume)."""


# ----------------------------------------------------------------------------------------
# distributed setup


@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: Precision = field(default_factory=lambda: Precision("cpu"))

    @property
    def bf16(self) -> bool:
        return self.precision.dtype is torch.bfloat16

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: TrainingConfig) -> Runtime:
    """Read the torchrun environment (if any), pick the device, start the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: cuda requested but no CUDA device is available")
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    enable_tf32(device)
    retain_freed_memory()
    return Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                   precision=choose_precision(cfg.bf16, device))


@dataclass(frozen=True)
class BatchLayout:
    """How one optimizer step's global batch is split: `world_size` processes x `accumulation`
    micro-batches of `micro_batch_size` windows each (an epoch's short last batch is split alike)."""

    batch_size: int
    world_size: int
    micro_batch_size: int
    accumulation: int

    @property
    def micro_batches(self) -> int:
        return self.world_size * self.accumulation

    def describe(self) -> str:
        return (f"global batch {self.batch_size} = {self.world_size} process(es) x {self.micro_batch_size} windows "
                f"x {self.accumulation} accumulation step(s)")


def batch_layout(batch_size: int, world_size: int, max_batch_per_device: int | None, where: str = "training"
                 ) -> BatchLayout:
    """The fewest equal micro-batches, a multiple of `world_size` of them, none larger than
    `max_batch_per_device` (null: batch_size / world_size), that make up `batch_size`. So the
    split does not depend on the number of processes whenever it can (192 at most 48 a device:
    4 micro-batches of 48, as 1 x 4, 2 x 2 or 4 x 1). ConfigError when `world_size` does not
    divide `batch_size`."""
    if batch_size % world_size:
        raise ConfigError(
            f"{where}.batch_size: the global batch ({batch_size}) cannot be split evenly over {world_size} processes; "
            f"use a batch_size that is a multiple of the process count, or {_dividing_counts(batch_size)} processes")
    cap = max_batch_per_device or batch_size // world_size
    n = world_size * math.ceil(math.ceil(batch_size / cap) / world_size)
    while batch_size % n:  # batch_size itself is a multiple of world_size: this ends
        n += world_size
    return BatchLayout(batch_size, world_size, batch_size // n, n // world_size)


def _dividing_counts(batch_size: int, most: int = 64) -> str:
    return ", ".join(str(w) for w in range(1, min(batch_size, most) + 1) if batch_size % w == 0)


# ----------------------------------------------------------------------------------------
# the job and the loop's state


@dataclass
class TrainingJob:
    """What the loop trains. `module` holds every trainable parameter (wrapped in DDP when
    distributed); `compute_losses(module, batch)` returns scalar tensors including "total"
    (the one that is back-propagated); `save_model(dir)` writes the final model dir;
    `to_device` moves frozen companions (the teacher) that are not part of `module`."""

    module: nn.Module
    compute_losses: Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    save_model: Callable[[Path], None]
    dataset: Any
    tokenizer: Any
    to_device: Callable[[torch.device], None] | None = None
    columns: tuple[str, ...] = WINDOW_COLUMNS


@dataclass
class TrainLoop:
    """Everything `fit` and `finish` work on, built by `prepare_loop`; `state` is what a checkpoint saves."""

    job: TrainingJob
    rt: Runtime
    module: nn.Module
    train_module: nn.Module  # `module` itself, or its DDP wrapper: forward/backward go through this one
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    output_dir: Path
    checkpoint_dir: Path
    identity: str  # resume_identity of the run config
    layout: BatchLayout
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    state: TrainState = field(default_factory=TrainState)
    data: Iterator[dict[str, torch.Tensor]] | None = None  # built last: it starts at the resumed position
    loss_names: list[str] = field(default_factory=list)  # sorted keys of compute_losses, fixed at the first batch
    last_logged: dict[str, float] = field(default_factory=dict)
    run_tokens: int = 0  # tokens (all ranks) since this process started: tokens/s leaves out earlier runs
    started: float = 0.0  # perf_counter at the start of `fit`
    wall_before: float = 0.0  # wall seconds of earlier runs, from the checkpoint
    sigterm: bool = False  # set by the SIGTERM handler while `fit` runs
    events: Any = None  # TensorBoard SummaryWriter (rank 0, when tensorboard is installed)
    perf: PerfMeter = field(default_factory=lambda: PerfMeter())  # tokens/s, FLOP/s, MFU per log window and run

    @property
    def log_path(self) -> Path:
        return self.output_dir / "train_log.jsonl"

    def wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.started


# ----------------------------------------------------------------------------------------
# prepare


def prepare_loop(job: TrainingJob, cfg: TrainingConfig, output_dir: str | os.PathLike, run_config: Mapping[str, Any],
          runtime: Runtime | None = None) -> TrainLoop:
    """Put the job on its device, build optimizer, schedule and data, and resume from the latest checkpoint."""
    rt = runtime or setup_runtime(cfg)
    module = job.module.to(rt.device)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(module)
    if job.to_device is not None:
        job.to_device(rt.device)
    optimizer = build_optimizer(module, cfg.lr, cfg.weight_decay, fused=bool(cfg.compile))
    output_dir = Path(output_dir)
    checkpoint_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else output_dir / "checkpoints"
    layout = run_layout(cfg, rt.world_size, checkpoint_dir)
    batches = ResumableBatches(len(job.dataset), cfg.batch_size, layout.micro_batches, seed=cfg.seed, rank=rt.rank,
                               world_size=rt.world_size)
    # one optimizer step per global batch, whatever the number of processes: the schedule cannot shift
    total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * batches.steps_per_epoch
    loop = TrainLoop(
        job=job, rt=rt, module=module, train_module=module, optimizer=optimizer,
        scheduler=linear_schedule(optimizer, cfg.warmup_steps, total_steps), total_steps=total_steps,
        output_dir=output_dir, checkpoint_dir=checkpoint_dir,
        identity=resume_identity(run_config, TrainingConfig.operational_keys()),
        layout=layout, scaler=rt.precision.grad_scaler(),
    )
    resume_or_start(loop, cfg)
    if rt.is_main:
        events_dir = output_dir / "tensorboard"
        lost = loop.state.step > 0 and not any(events_dir.glob("events.out.tfevents.*"))
        loop.events = open_event_writer(events_dir, resumed_at=loop.state.step)
        if lost and loop.events is not None:  # the output dir was replaced: the events again, from the log
            for record in read_train_log(loop.log_path):
                write_events(loop.events, record)
    if rt.distributed:
        loop.train_module = nn.parallel.DistributedDataParallel(
            module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )
    if cfg.compile:
        loop.train_module = compile_step(loop.train_module, cfg.compile)
    loop.perf = PerfMeter(precision="bf16" if rt.bf16 else "fp32", device=rt.device)
    rows = TaggedRows(job.dataset, tuple(c for c in job.columns if c in job.dataset.column_names))
    pad_to = longest_window(job.dataset) if cfg.pad_to == "max_length" else cfg.pad_to
    collate = SeededMLMCollator(job.tokenizer, cfg.mlm_probability, pad_to=pad_to, batch_size=batches.batch_size)
    loop.data = micro_batches(rows, batches, collate, loop.state, num_workers=cfg.num_workers, device=rt.device)
    return loop


def enable_activation_checkpointing(module: nn.Module) -> None:
    """Activation checkpointing on every model in `module` that supports it (the student: per
    recursion), non-reentrant (dropout masks are replayed: the same gradients)."""
    from transformers import PreTrainedModel

    models = [m for m in module.modules() if isinstance(m, PreTrainedModel) and m.supports_gradient_checkpointing]
    if not models:
        raise ConfigError(f"training.gradient_checkpointing: no model in {type(module).__name__} supports it")
    for model in models:  # the outermost ones: enabling a model enables the models inside it
        if not any(other is not model and any(model is m for m in other.modules()) for other in models):
            model.activation_checkpointing_enable({"use_reentrant": False})


def compile_step(module: nn.Module, setting: bool | str) -> nn.Module:
    """`module` (the student's step: its forward runs the teacher, the student and the losses)
    compiled by torch.compile, whose backward AOTAutograd compiles with it (`setting`: True for
    inductor, or a backend name). The teacher's hooks are installed beforehand
    (`minialbert.objective.prepare_teacher`), so the whole step is one graph; with fixed shapes
    (training.pad_to) it is traced once (tests/test_engine_training.py counts Dynamo's compilations)."""
    return torch.compile(module, backend="inductor" if setting is True else setting)


def open_event_writer(path: Path, resumed_at: int):
    """A TensorBoard writer beside train_log.jsonl (events after step `resumed_at`, from a run
    killed before its next checkpoint, are dropped); None with a one-line notice without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("minialbert: tensorboard is not installed: no event files (pip install tensorboard)", file=sys.stderr)
        return None
    # TensorBoard drops the events at and after purge_step: the checkpoint's own step is kept
    return SummaryWriter(log_dir=str(path), purge_step=resumed_at + 1 if resumed_at else None)


def resume_or_start(loop: TrainLoop, cfg: TrainingConfig) -> None:
    """Load the latest checkpoint into `loop` (rank 0 cuts the log back to it), or start an empty
    log. The checkpoints of a run that completed (kept by keep_checkpoints_when_done) are not
    resumed: they are removed and the run starts at step 0."""
    rt, seed = loop.rt, cfg.seed
    finished = finished_run(loop.checkpoint_dir)
    if rt.distributed:  # every rank has read the mark before rank 0 removes it
        torch.distributed.barrier()
    if finished is not None and rt.is_main:
        print(f"minialbert: {loop.checkpoint_dir} holds the checkpoints of a completed run (step "
              f"{finished.get('step')}); starting at step 0 and replacing them", file=sys.stderr, flush=True)
        clear_checkpoints(loop.checkpoint_dir)
    if rt.distributed:  # and nobody looks for a checkpoint before they are gone
        torch.distributed.barrier()
    ckpt = latest_checkpoint(loop.checkpoint_dir)
    same_world = False
    if ckpt is not None:
        same_world = check_resumable_layout(ckpt, loop.layout, rt.is_main)
        # Every rank's RNG states are saved: on as many processes, each rank continues its own
        # streams (dropout masks, so losses, as uninterrupted); on another number, rank 0
        # continues its own and the others reseed below, so that their streams still differ.
        loop.state = load_checkpoint(ckpt, module=loop.module, optimizer=loop.optimizer, scheduler=loop.scheduler,
                                     identity=loop.identity, restore_rng=rt.is_main or same_world,
                                     scaler=loop.scaler, rank=rt.rank)
        msg = f"resuming from checkpoint {ckpt} at step {loop.state.step} of {loop.total_steps}"
        logger.warning(msg)
        if rt.is_main:
            print(f"minialbert: {msg}", file=sys.stderr, flush=True)
            loop.output_dir.mkdir(parents=True, exist_ok=True)
            saved_log = ckpt / loop.log_path.name
            if saved_log.is_file():  # the history up to the checkpoint, whatever the output dir lost
                shutil.copyfile(saved_log, loop.log_path)
            _truncate_log(loop.log_path, loop.state.step)
            _append_log(loop.log_path, {"event": "resume", "step": loop.state.step, "checkpoint": str(ckpt)})
    elif rt.is_main:
        loop.output_dir.mkdir(parents=True, exist_ok=True)
        loop.log_path.write_text("")
    if not rt.is_main and not same_world:
        torch.manual_seed(seed * 7919 + rt.rank * 104729 + loop.state.step)


def check_resumable_layout(ckpt: Path, layout: BatchLayout, is_main: bool) -> bool:
    """A checkpoint resumes with another split of the global batch (another number of processes or
    max_batch_per_device): its data position counts global batches. Rank 0 says so. True when
    the checkpoint was written by as many processes as this run has."""
    written = checkpoint_layout(ckpt)
    if written["batch_size"] != layout.batch_size:  # the resume identity would refuse it too; this names why
        raise ConfigError(f"{ckpt}: checkpoint has global batch {written['batch_size']}, training.batch_size is "
                          f"{layout.batch_size}")
    if is_main and (written["world_size"], written["micro_batch_size"]) != (layout.world_size,
                                                                             layout.micro_batch_size):
        print(f"minialbert: {ckpt} was written by {written['world_size']} process(es) "
              f"({written['micro_batch_size']} windows x {written['accumulation']} accumulation step(s)); resuming on "
              f"{layout.describe()}: the same global batches in the same order", file=sys.stderr, flush=True)
    return written["world_size"] == layout.world_size


def run_layout(cfg: TrainingConfig, world_size: int, checkpoint_dir: Path) -> BatchLayout:
    """This run's `batch_layout`; when it cannot split the global batch and a checkpoint waits to
    be resumed, the ConfigError names the checkpoint's number of processes and this run's."""
    try:
        return batch_layout(cfg.batch_size, world_size, cfg.max_batch_per_device)
    except ConfigError as e:
        ckpt = None if finished_run(checkpoint_dir) else latest_checkpoint(checkpoint_dir)
        if ckpt is None:
            raise
        written = checkpoint_layout(ckpt)
        raise ConfigError(f"{ckpt}: cannot resume on {world_size} processes a checkpoint written by "
                          f"{written['world_size']} ({written['micro_batch_size']} windows x "
                          f"{written['accumulation']} accumulation step(s) each): {e}") from None


def micro_batches(rows: TaggedRows, batches: ResumableBatches, collate: SeededMLMCollator, state: TrainState, *,
                  num_workers: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless padded, masked micro-batches of this rank on `device` from `state`'s data position on,
    `batches.accumulation` per step; the position advances by one step with each step's last one."""
    while True:
        steps = batches.epoch_steps(state.epoch, state.batch_in_epoch)
        # Its own generator: a DataLoader iterator otherwise draws its base seed from the global
        # RNG, one draw per new iterator, which a resume mid-epoch would add at another point of
        # the stream than the uninterrupted run (dropout masks, and so losses, differed after it).
        loader = torch.utils.data.DataLoader(rows, batch_sampler=[m for step in steps for m in step],
                                             collate_fn=collate, num_workers=num_workers,
                                             pin_memory=device.type == "cuda",
                                             generator=torch.Generator().manual_seed(state.epoch))
        for i, batch in enumerate(loader):
            if i % batches.accumulation == batches.accumulation - 1:
                state.batch_in_epoch += 1
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        state.epoch += 1
        state.batch_in_epoch = 0


# ----------------------------------------------------------------------------------------
# fit


def fit(loop: TrainLoop, cfg: TrainingConfig) -> None:
    """Optimizer steps up to `loop.total_steps`, logging and checkpointing on the way.

    Raises NonFiniteLossError before applying a NaN/inf update, TrainingInterrupted after checkpointing on SIGTERM.
    """
    from tqdm.auto import tqdm

    state, accum = loop.state, loop.layout.accumulation
    bar = tqdm(total=loop.total_steps, initial=state.step, disable=not loop.rt.is_main, desc="training",
               dynamic_ncols=True, file=sys.stderr, mininterval=1.0)
    window = LossWindow(state.log_sums, state.log_steps)  # a resumed run's first log line averages the same steps
    loop.started, loop.wall_before = time.perf_counter(), state.wall_seconds
    loop.perf.window_started = loop.perf.run_started = loop.started
    loop.module.train()
    with _sigterm_sets_flag(loop), contextlib.closing(bar):
        while state.step < loop.total_steps:
            component_sum, tokens = accumulate_gradients(loop, accum)
            losses, step_tokens, sigterm = reduce_across_ranks(loop, component_sum, tokens, accum)
            check_finite(losses, state.step + 1, loop.checkpoint_dir)
            if loop.scaler is not None:
                loop.scaler.unscale_(loop.optimizer)  # clip the true gradients
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(loop.module.parameters(), cfg.max_grad_norm)
            if loop.scaler is not None:  # skips the update when fp16 gradients overflowed, and lowers the scale
                loop.scaler.step(loop.optimizer)
                loop.scaler.update()
            else:
                loop.optimizer.step()
            loop.scheduler.step()
            loop.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.tokens_seen += step_tokens
            loop.run_tokens += step_tokens
            loop.perf.tokens += step_tokens
            window.add(losses)
            bar.update(1)
            if state.step % cfg.log_interval == 0 or state.step == loop.total_steps:
                log_step(loop, window.pop_mean(), bar)
            state.log_sums, state.log_steps = window.sums, window.steps
            if sigterm:
                path = checkpoint(loop, cfg)
                raise TrainingInterrupted(
                    f"SIGTERM at step {state.step}: checkpoint {path or loop.checkpoint_dir} written; restart to resume"
                )
            if state.step % cfg.checkpoint_interval == 0 and state.step < loop.total_steps:
                checkpoint(loop, cfg)


@contextlib.contextmanager
def _sigterm_sets_flag(loop: TrainLoop) -> Iterator[None]:
    """While inside, SIGTERM only sets `loop.sigterm`: the step in flight ends, is checkpointed, then the loop stops."""

    def on_sigterm(signum, frame):  # noqa: ARG001
        loop.sigterm = True

    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread: no handler
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def accumulate_gradients(loop: TrainLoop, accum: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward over `accum` micro-batches (DDP syncs gradients on the last one only).

    Returns the loss components summed over the micro-batches, (C,) in `loop.loss_names` order, and the tokens, ().
    """
    rt = loop.rt
    component_sum = None
    tokens = torch.zeros((), device=rt.device, dtype=torch.float64)
    for micro in range(accum):
        batch = next(loop.data)
        sync = loop.train_module.no_sync() if rt.distributed and micro < accum - 1 else contextlib.nullcontext()
        with sync:
            with rt.precision.autocast():
                losses = loop.job.compute_losses(loop.train_module, batch)
            loss = losses["total"] / accum
            (loop.scaler.scale(loss) if loop.scaler is not None else loss).backward()
        if not loop.loss_names:
            loop.loss_names = sorted(losses)
        loop.perf.add_batch(loop.module, batch)
        values = torch.stack([losses[n].detach().float() for n in loop.loss_names])  # (C,)
        component_sum = values if component_sum is None else component_sum + values
        tokens += batch["attention_mask"].sum()
    return component_sum, tokens


def reduce_across_ranks(loop: TrainLoop, component_sum: torch.Tensor, tokens: torch.Tensor, accum: int
                        ) -> tuple[dict[str, float], int, bool]:
    """Loss components averaged over micro-batches and ranks, tokens summed, and "SIGTERM on some rank".

    One small all-reduce (and one host sync) per optimizer step carries everything the ranks must agree on.
    """
    rt = loop.rt
    sigterm = torch.tensor([float(loop.sigterm)], device=rt.device, dtype=torch.float64)
    packed = torch.cat([component_sum.double() / accum, tokens.reshape(1), sigterm])  # (C + 2,)
    if rt.distributed:
        torch.distributed.all_reduce(packed)
        packed[:-2] /= rt.world_size
    values = packed.tolist()
    return dict(zip(loop.loss_names, values[:-2])), int(values[-2]), values[-1] > 0


def check_finite(losses: Mapping[str, float], step: int, checkpoint_dir: Path) -> None:
    """Raise NonFiniteLossError naming `step`, the bad component(s) and the last good checkpoint."""
    bad = [n for n, v in losses.items() if not math.isfinite(v)]
    if bad:
        good = latest_checkpoint(checkpoint_dir)
        raise NonFiniteLossError(
            f"step {step}: non-finite loss component(s) {', '.join(bad)} "
            f"({', '.join(f'{n}={losses[n]}' for n in bad)}); no update was applied; "
            f"last good checkpoint: {good if good else 'none written yet'}"
        )


@dataclass
class LossWindow:
    """Sums of the per-step loss components since the last log line."""

    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0

    def add(self, losses: Mapping[str, float]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1

    def pop_mean(self) -> dict[str, float]:
        mean = {name: value / self.steps for name, value in self.sums.items()}
        self.sums, self.steps = {}, 0
        return mean


def log_step(loop: TrainLoop, losses: dict[str, float], bar) -> None:
    """Keep `losses` for metrics.json; rank 0 appends a train_log.jsonl record and shows them on the bar."""
    loop.last_logged = losses
    if not loop.rt.is_main:
        return
    state = loop.state
    record = {"step": state.step, "epoch": state.epoch, "lr": loop.scheduler.get_last_lr()[0],
              "tokens_seen": state.tokens_seen, "elapsed_seconds": round(loop.wall_seconds(), 3), **losses,
              **loop.perf.pop_window()}
    _append_log(loop.log_path, record)
    if loop.events is not None:
        write_events(loop.events, record)
    bar.set_postfix({n: f"{v:.4g}" for n, v in losses.items() if n == "total" or len(losses) < 4})


LOG_FIELDS = ("step", "epoch", "lr", "tokens_seen", "elapsed_seconds", *PERF_FIELDS)  # the rest: loss components


def write_events(events, record: Mapping[str, Any]) -> None:
    """One train_log.jsonl record as TensorBoard scalars: loss/<component>, lr and perf/<field>."""
    for name, value in record.items():
        if name not in LOG_FIELDS:
            events.add_scalar(f"loss/{name}", value, record["step"])
        elif name in PERF_FIELDS and value is not None:
            events.add_scalar(f"perf/{name}", value, record["step"])
    events.add_scalar("lr", record["lr"], record["step"])


@dataclass
class PerfMeter:
    """Tokens (all ranks) and model FLOPs (this rank: `minialbert.flops`, from each micro-batch's
    shape, no device sync) since the last log line and since the run started, and what they
    make per second against the device's peak (`minialbert.flops.peak_flops`): MFU."""

    precision: str = "fp32"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    tokens: int = 0
    flops: float | None = 0.0
    run_tokens: int = 0
    run_flops: float | None = 0.0
    window_started: float = field(default_factory=time.perf_counter)
    run_started: float = field(default_factory=time.perf_counter)

    def add_batch(self, module: nn.Module, batch: Mapping[str, torch.Tensor]) -> None:
        if self.flops is None:
            return
        if not hasattr(module, "objective"):  # not a DistillationModule: no FLOP model, no MFU
            self.flops = self.run_flops = None
            return
        B, T = batch["input_ids"].shape
        flops = distillation_step_flops(module, B, T, batch["masked_positions"].numel())
        self.flops += flops
        self.run_flops += flops

    def _figures(self, tokens: int, flops: float | None, seconds: float) -> dict[str, float | None]:
        peak = peak_flops(self.device, self.precision)[0] if flops is not None else None
        per_second = flops / seconds if flops is not None and seconds > 0 else None
        return {"tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
                "tflops_per_second": None if per_second is None else round(per_second / 1e12, 6),
                "mfu": None if per_second is None or not peak else round(per_second / peak, 6),
                "peak_memory_bytes": peak_memory_bytes(self.device)}

    def pop_window(self) -> dict[str, float | None]:
        """The figures since the last call (or the start), then a new window."""
        out = self._figures(self.tokens, self.flops, time.perf_counter() - self.window_started)
        self.run_tokens += self.tokens
        # after the figures: the CPU peak is measured at the first call, outside every window
        self.tokens, self.window_started = 0, time.perf_counter()
        self.flops = None if self.flops is None else 0.0
        return out

    def run_means(self) -> dict[str, float | None]:
        """The figures over the whole run of this process (compilation and the first steps included)."""
        out = self._figures(self.run_tokens + self.tokens, self.run_flops, time.perf_counter() - self.run_started)
        out.pop("tokens_per_second")  # metrics.json has it already (same definition)
        out["peak_flops_source"] = peak_flops(self.device, self.precision)[1] if self.run_flops is not None else None
        return out


def checkpoint(loop: TrainLoop, cfg: TrainingConfig) -> Path | None:
    """Every rank hands in its RNG states; rank 0 writes `checkpoint_dir/step-N` and returns its
    path, the other ranks return None."""
    loop.state.wall_seconds = loop.wall_seconds()
    rng_states = [rng_state()]
    if loop.rt.distributed:  # every rank's streams, so that a resume on as many processes continues each
        rng_states = [None] * loop.rt.world_size
        torch.distributed.all_gather_object(rng_states, rng_state())
    if not loop.rt.is_main:
        return None
    return save_checkpoint(loop.checkpoint_dir, module=loop.module, optimizer=loop.optimizer, scheduler=loop.scheduler,
                           state=loop.state, identity=loop.identity, keep=cfg.keep_checkpoints,
                           layout=dataclasses.asdict(loop.layout), scaler=loop.scaler, rng_states=rng_states,
                           files=[loop.log_path])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after `step` by a run that was killed before its next checkpoint."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
    path.write_text("".join(x + "\n" for x in keep))


def _append_log(path: Path, record: Mapping[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------------------
# finish


def finish(loop: TrainLoop, run_config: Mapping[str, Any], resolved: Mapping[str, Any] | None = None, *,
           keep_checkpoints: bool = False) -> dict[str, Any]:
    """Rank 0 writes output_dir/model (atomically) and metrics.json, then removes the checkpoints
    (`keep_checkpoints`: marks them finished, never to be resumed); returns the metrics on every rank."""
    rt, state = loop.rt, loop.state
    wall = time.perf_counter() - loop.started
    state.wall_seconds = loop.wall_before + wall
    metrics = {
        "loss": loop.last_logged,
        **loop.last_logged,
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "wall_seconds": state.wall_seconds,
        "tokens_per_second": loop.run_tokens / wall if wall > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(rt.device),
        **loop.perf.run_means(),
        "world_size": rt.world_size,
        "batch_layout": dataclasses.asdict(loop.layout),
        "precision": rt.precision.name,
        "bf16": rt.bf16,
        "device": str(rt.device.type),
        "config": run_config,
        "config_hash": config_hash(run_config),
    }
    if resolved is not None:  # what the config's nulls resolved to (sizes, layer map), beside it
        metrics["resolved"] = resolved
    if rt.is_main:
        with atomic_directory(loop.output_dir / "model") as tmp:
            loop.job.save_model(tmp)
        write_json_atomic(loop.output_dir / "metrics.json", metrics)
        # after the outputs: a run killed before this line resumes (same code) and ends here again
        finish_checkpoints(loop.checkpoint_dir, keep=keep_checkpoints, step=state.step, identity=loop.identity)
    if rt.distributed:
        torch.distributed.barrier()
    return metrics


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


# ----------------------------------------------------------------------------------------
# the entry point


def run_training(job: TrainingJob, cfg: TrainingConfig, *, output_dir: str | os.PathLike,
                 run_config: Mapping[str, Any], resolved: Mapping[str, Any] | None = None,
                 runtime: Runtime | None = None) -> dict[str, Any]:
    """Run (or resume) training to the configured step, then write output_dir/model, metrics.json
    (`run_config`, the command's config as given, and `resolved`, what its nulls resolved to).

    Returns the metrics dict. Raises NonFiniteLossError on a NaN/inf loss (no update applied,
    the last checkpoint kept) and TrainingInterrupted after checkpointing on SIGTERM.
    """
    loop = prepare_loop(job, cfg, output_dir, run_config, runtime)
    try:
        fit(loop, cfg)
        return finish(loop, run_config, resolved, keep_checkpoints=cfg.keep_checkpoints_when_done)
    finally:
        if loop.events is not None:
            loop.events.close()


def shutdown_runtime() -> None:
    """Tear down the process group if this process started one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
