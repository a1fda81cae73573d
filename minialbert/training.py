"""The training loop shared by `minialbert distill` and `minialbert pretrain-teacher`.

A plain PyTorch loop (no Trainer, no accelerate) so that every piece a cluster job needs is
visible in one place:

- data: a windows dataset (unpadded rows) is shuffled deterministically per epoch, sharded
  by DDP rank, padded per batch and MLM-masked (15%, 80/10/10) by transformers'
  `DataCollatorForLanguageModeling`, whose generator is re-seeded for every batch from
  (seed, epoch, rank, batch index): a resumed run sees exactly the batches and masks the
  uninterrupted run would have seen;
- optimisation: AdamW (no weight decay on biases and LayerNorm weights, i.e. every
  parameter with fewer than two dimensions), linear warm-up then linear decay to zero,
  gradient accumulation, gradient clipping, `max_steps` or `epochs`;
- safety: atomic checkpoints outside the output model dir (model, optimizer, scheduler, RNG
  states, step, data position, config hash), resume from the latest one on restart,
  refusal of a checkpoint written by a different config, a stop with an error naming the
  step and the loss component when a loss is NaN/inf (before the bad update, so the last
  checkpoint stays good), SIGTERM -> checkpoint -> exit;
- reporting: tqdm progress bar, JSONL log of every loss component at each logging step,
  metrics.json (final loss components, steps, tokens seen, wall time, tokens/s, peak
  memory, resolved config and its hash);
- scale: DDP under `torchrun --nproc_per_node N` (gloo on CPU, nccl on GPU; only rank 0
  writes), bf16 autocast on GPU.

What differs between distillation and teacher pre-training is passed in as a `TrainingJob`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from minialbert.utils import ConfigError, atomic_directory, config_hash, write_json_atomic

logger = logging.getLogger("minialbert.training")

# The `training:` section of the distill / pretrain-teacher configs, with defaults.
TRAINING_DEFAULTS: dict[str, Any] = {
    "lr": 5e-4,
    "warmup_steps": 0,
    "weight_decay": 0.01,
    "batch_size": 32,  # per process (per GPU); the global batch is batch_size x accumulation x world size
    "gradient_accumulation_steps": 1,
    "max_steps": None,  # optimizer steps; exactly one of max_steps / epochs
    "epochs": None,
    "seed": 42,
    "mlm_probability": 0.15,
    "max_grad_norm": 1.0,  # null: no clipping
    "bf16": "auto",  # auto: on when a bf16-capable GPU is used; true / false to force
    "device": "auto",  # auto | cpu | cuda
    "log_interval": 50,
    "checkpoint_interval": 500,
    "checkpoint_dir": None,  # default: <output>/checkpoints
    "keep_checkpoints": 2,
    "num_workers": 0,
}
# Keys that change how a run is observed or stored, not what it computes: a checkpoint
# written under different values of these is still resumed.
OPERATIONAL_KEYS = ("log_interval", "checkpoint_interval", "checkpoint_dir", "keep_checkpoints", "num_workers", "device")

WINDOW_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")


class NonFiniteLossError(RuntimeError):
    """A loss component became NaN or infinite; the message names the step and component."""


class TrainingInterrupted(RuntimeError):
    """SIGTERM arrived; a checkpoint was written and the run stopped early (restart to resume)."""


# ----------------------------------------------------------------------------------------
# config


def _check_type(where: str, key: str, value: Any, kind: str) -> None:
    ok = {
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: training.{key}: expected {'an integer' if kind == 'int' else 'a ' + kind}, got {value!r}")


def resolve_training_config(raw: Mapping[str, Any] | None, where: str = "config") -> dict[str, Any]:
    """Fill defaults into a `training:` mapping and validate it; ConfigError names the key."""
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(TRAINING_DEFAULTS))
    if unknown:
        raise ConfigError(f"{where}: training.{unknown[0]}: unknown key (known: {', '.join(TRAINING_DEFAULTS)})")
    cfg = {**TRAINING_DEFAULTS, **raw}
    for key in ("lr", "weight_decay", "mlm_probability"):
        _check_type(where, key, cfg[key], "number")
        cfg[key] = float(cfg[key])
    if cfg["lr"] <= 0:
        raise ConfigError(f"{where}: training.lr: expected a positive number, got {cfg['lr']}")
    if not 0 < cfg["mlm_probability"] < 1:
        raise ConfigError(f"{where}: training.mlm_probability: expected a number in (0, 1), got {cfg['mlm_probability']}")
    for key, minimum in (("warmup_steps", 0), ("batch_size", 1), ("gradient_accumulation_steps", 1),
                         ("seed", 0), ("log_interval", 1), ("checkpoint_interval", 1), ("keep_checkpoints", 1),
                         ("num_workers", 0)):
        _check_type(where, key, cfg[key], "int")
        if cfg[key] < minimum:
            raise ConfigError(f"{where}: training.{key}: expected an integer >= {minimum}, got {cfg[key]}")
    if (cfg["max_steps"] is None) == (cfg["epochs"] is None):
        raise ConfigError(f"{where}: training.max_steps / training.epochs: set exactly one of them")
    for key in ("max_steps", "epochs"):
        if cfg[key] is not None:
            _check_type(where, key, cfg[key], "int")
            if cfg[key] < 1:
                raise ConfigError(f"{where}: training.{key}: expected an integer >= 1, got {cfg[key]}")
    if cfg["max_grad_norm"] is not None:
        _check_type(where, "max_grad_norm", cfg["max_grad_norm"], "number")
    if cfg["bf16"] not in ("auto", True, False):
        raise ConfigError(f"{where}: training.bf16: expected auto, true or false, got {cfg['bf16']!r}")
    if cfg["device"] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{where}: training.device: expected auto, cpu or cuda, got {cfg['device']!r}")
    if cfg["checkpoint_dir"] is not None and not isinstance(cfg["checkpoint_dir"], str):
        raise ConfigError(f"{where}: training.checkpoint_dir: expected a path or null, got {cfg['checkpoint_dir']!r}")
    return cfg


def checkpoint_identity(run_config: Mapping[str, Any]) -> str:
    """Hash of what a run computes: the resolved config without the operational training keys."""
    cfg = json.loads(json.dumps(run_config, default=str))
    training = cfg.get("training", {})
    for key in OPERATIONAL_KEYS:
        training.pop(key, None)
    return config_hash(cfg)


# ----------------------------------------------------------------------------------------
# distributed setup


@dataclass
class Runtime:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(cfg: Mapping[str, Any]) -> Runtime:
    """Read the torchrun environment (if any), pick the device, start the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.get("device", "auto")
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
    bf16 = cfg.get("bf16", "auto")
    if bf16 == "auto":
        bf16 = use_cuda and torch.cuda.is_bf16_supported()
    return Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=device, bf16=bool(bf16))


# ----------------------------------------------------------------------------------------
# data: deterministic, resumable, rank-sharded batches with per-batch masking seeds


def _batch_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class ResumableBatches:
    """Batches of dataset row indices: a fresh permutation per epoch (seeded), split across
    ranks with equal counts (the permutation is wrapped around, as DistributedSampler does),
    each batch tagged with its own masking seed. `epoch_batches(epoch, start)` skips the
    first `start` batches without touching the data, which is how a resume finds its place."""

    def __init__(self, num_rows: int, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1):
        if num_rows == 0:
            raise ConfigError("windows dataset: it has no rows")
        self.num_rows, self.batch_size, self.seed = num_rows, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.rows_per_rank = math.ceil(num_rows / world_size)
        self.batches_per_epoch = math.ceil(self.rows_per_rank / batch_size)

    def epoch_batches(self, epoch: int, start: int = 0) -> list[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        order = torch.randperm(self.num_rows, generator=g).tolist()
        total = self.rows_per_rank * self.world_size
        order = (order * math.ceil(total / self.num_rows))[:total]
        mine = order[self.rank : total : self.world_size]
        out = []
        for b in range(start, self.batches_per_epoch):
            s = _batch_seed(self.seed, epoch, self.rank, b)
            out.append([(i, s) for i in mine[b * self.batch_size : (b + 1) * self.batch_size]])
        return out


class _TaggedRows(torch.utils.data.Dataset):
    """Dataset view that fetches a batch of rows in one call and carries the batch's masking seed."""

    def __init__(self, dataset, columns: tuple[str, ...]):
        self.dataset, self.columns = dataset.select_columns(list(columns)), columns

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict[str, Any]]:
        rows = self.dataset[[k[0] for k in keys]]
        out = [{c: rows[c][j] for c in self.columns} for j in range(len(keys))]
        out[0]["_seed"] = keys[0][1]
        return out

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])[0]


class SeededMLMCollator:
    """Pads and MLM-masks a batch with `DataCollatorForLanguageModeling` (15%, 80/10/10 by
    default), re-seeding its generator from the batch's tag so masks are reproducible. Adds
    `masked_positions` (flat indices of the labelled positions, padded with -1), computed here on
    the CPU so the training step never waits on a data-dependent size."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15):
        from transformers import DataCollatorForLanguageModeling

        self.collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from minialbert.distillation import masked_positions_from_labels

        seed = examples[0].pop("_seed", None)
        self.collator.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        batch = dict(self.collator(examples))
        batch["masked_positions"] = masked_positions_from_labels(batch["labels"])
        return batch


def load_windows(path: str | os.PathLike, where: str = "config"):
    """Load a windows dataset dir (datasets `save_to_disk`), checking its columns."""
    from datasets import DatasetDict, load_from_disk

    p = Path(path)
    if not p.is_dir():
        raise ConfigError(f"{where}: windows: {p} is not a directory (expected a datasets Arrow dir)")
    try:
        ds = load_from_disk(str(p))
    except Exception as e:  # noqa: BLE001 - datasets raises several kinds
        raise ConfigError(f"{where}: windows: {p} is not a datasets save_to_disk dir ({e})") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise ConfigError(f"{where}: windows: {p} is a DatasetDict without a 'train' split")
        ds = ds["train"]
    missing = [c for c in ("input_ids", "attention_mask") if c not in ds.column_names]
    if missing:
        raise ConfigError(f"{where}: windows: {p} lacks column(s) {missing} (has {ds.column_names})")
    return ds


# ----------------------------------------------------------------------------------------
# optimisation


def build_optimizer(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and LayerNorm weights (ndim < 2) are not decayed."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if all(p.is_cuda for p in decay + no_decay) and decay else {}
    return torch.optim.AdamW(groups, lr=lr, **kwargs)


def linear_schedule(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 to the peak lr over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------
# checkpoints

_CKPT_RE = re.compile(r"^step-(\d+)$")


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in `checkpoint_dir` (None if there is none)."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and (p / "meta.json").is_file()]
    return max(found)[1] if found else None


def _rng_state() -> dict[str, Any]:
    py = random.getstate()
    npy = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npy[0], torch.from_numpy(npy[1].astype(np.int64)), int(npy[2]), int(npy[3]), float(npy[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state((npy[0], npy[1].numpy().astype(np.uint32), npy[2], npy[3], npy[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, data position (epoch, batches consumed in it), totals so far."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    wall_seconds: float = 0.0


def save_checkpoint(checkpoint_dir: Path, *, module, optimizer, scheduler, state: TrainState, identity: str,
                    keep: int) -> Path:
    """Write `checkpoint_dir/step-N` atomically, then prune all but the newest `keep`."""
    dst = checkpoint_dir / f"step-{state.step:08d}"
    with atomic_directory(dst) as tmp:
        torch.save(
            {
                "module": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "state": vars(state).copy(),
            },
            tmp / "state.pt",
        )
        write_json_atomic(tmp / "meta.json", {"step": state.step, "config_hash": identity, "state": vars(state)})
    old = sorted((int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _CKPT_RE.match(p.name)))
    for _, p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return dst


def load_checkpoint(path: Path, *, module, optimizer, scheduler, identity: str, restore_rng: bool) -> TrainState:
    """Restore a checkpoint written by this config; a checkpoint of another config is refused."""
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("config_hash") != identity:
        raise ConfigError(
            f"{path}: checkpoint was written by a different config (hash {meta.get('config_hash')}, this run "
            f"{identity}); delete it, or point training.checkpoint_dir elsewhere to start afresh"
        )
    blob = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    module.load_state_dict(blob["module"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if restore_rng:
        _set_rng_state(blob["rng"])
    return TrainState(**blob["state"])


# ----------------------------------------------------------------------------------------
# the loop


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


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


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


def train(job: TrainingJob, cfg: Mapping[str, Any], *, output_dir: str | os.PathLike, run_config: Mapping[str, Any],
          runtime: Runtime | None = None) -> dict[str, Any]:
    """Run (or resume) training to the configured step, then write output_dir/model, metrics.json.

    Returns the metrics dict. Raises NonFiniteLossError on a NaN/inf loss (no update applied,
    the last checkpoint kept) and TrainingInterrupted after checkpointing on SIGTERM.
    """
    rt = runtime or setup_runtime(cfg)
    output_dir = Path(output_dir)
    ckpt_dir = Path(cfg["checkpoint_dir"]) if cfg.get("checkpoint_dir") else output_dir / "checkpoints"
    log_path = output_dir / "train_log.jsonl"
    identity = checkpoint_identity(run_config)
    full_hash = config_hash(run_config)
    accum = cfg["gradient_accumulation_steps"]

    module = job.module.to(rt.device)
    if job.to_device is not None:
        job.to_device(rt.device)
    optimizer = build_optimizer(module, cfg["lr"], cfg["weight_decay"])

    batches = ResumableBatches(len(job.dataset), cfg["batch_size"], seed=cfg["seed"], rank=rt.rank,
                               world_size=rt.world_size)
    if cfg["max_steps"] is not None:
        total_steps = cfg["max_steps"]
    else:
        total_steps = math.ceil(cfg["epochs"] * batches.batches_per_epoch / accum)
    scheduler = linear_schedule(optimizer, cfg["warmup_steps"], total_steps)

    state = TrainState()
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is not None:
        # Rank 0's RNG state is saved; other ranks reseed below so their dropout streams differ.
        state = load_checkpoint(ckpt, module=module, optimizer=optimizer, scheduler=scheduler, identity=identity,
                                restore_rng=rt.is_main)
        msg = f"resuming from checkpoint {ckpt} at step {state.step} of {total_steps}"
        logger.warning(msg)
        if rt.is_main:
            print(f"minialbert: {msg}", file=sys.stderr, flush=True)
            output_dir.mkdir(parents=True, exist_ok=True)
            _truncate_log(log_path, state.step)
            _append_log(log_path, {"event": "resume", "step": state.step, "checkpoint": str(ckpt)})
    elif rt.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
    if not rt.is_main:
        torch.manual_seed(cfg["seed"] * 7919 + rt.rank * 104729 + state.step)

    train_module: nn.Module = module
    if rt.distributed:
        train_module = nn.parallel.DistributedDataParallel(
            module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )

    collate = SeededMLMCollator(job.tokenizer, cfg["mlm_probability"])
    rows = _TaggedRows(job.dataset, tuple(c for c in job.columns if c in job.dataset.column_names))

    def micro_batches() -> Iterator[dict[str, torch.Tensor]]:
        while True:
            epoch_list = batches.epoch_batches(state.epoch, state.batch_in_epoch)
            loader = torch.utils.data.DataLoader(
                rows, batch_sampler=epoch_list, collate_fn=collate, num_workers=cfg["num_workers"],
                pin_memory=rt.device.type == "cuda",
            )
            for batch in loader:
                state.batch_in_epoch += 1
                yield {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            state.epoch += 1
            state.batch_in_epoch = 0

    stop = {"sigterm": False}

    def on_sigterm(signum, frame):  # noqa: ARG001
        stop["sigterm"] = True

    previous_handler = None
    with contextlib.suppress(ValueError):  # not in the main thread: no handler
        previous_handler = signal.signal(signal.SIGTERM, on_sigterm)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=state.step, disable=not rt.is_main, desc="training", dynamic_ncols=True,
               file=sys.stderr, mininterval=1.0)
    names: list[str] | None = None
    window_sum: torch.Tensor | None = None
    window_steps = 0
    last_logged: dict[str, float] = {}
    run_tokens = 0
    start = time.perf_counter()
    wall_before = state.wall_seconds
    autocast = torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.bf16)
    data = micro_batches()
    module.train()

    def checkpoint() -> Path | None:
        state.wall_seconds = wall_before + time.perf_counter() - start
        if rt.is_main:
            return save_checkpoint(ckpt_dir, module=module, optimizer=optimizer, scheduler=scheduler, state=state,
                                   identity=identity, keep=cfg["keep_checkpoints"])
        return None

    try:
        while state.step < total_steps:
            comp_sum = None
            tokens = torch.zeros((), device=rt.device, dtype=torch.float64)
            for micro in range(accum):
                batch = next(data)
                sync = train_module.no_sync() if rt.distributed and micro < accum - 1 else contextlib.nullcontext()
                with sync:
                    with autocast:
                        losses = job.compute_losses(train_module, batch)
                    (losses["total"] / accum).backward()
                if names is None:
                    names = sorted(losses)
                vals = torch.stack([losses[n].detach().float() for n in names])
                comp_sum = vals if comp_sum is None else comp_sum + vals
                tokens += batch["attention_mask"].sum()
            # One small all-reduce (and one host sync) per optimizer step: mean components,
            # token count, and the flags every rank must agree on (non-finite loss, SIGTERM).
            flags = torch.tensor([float(stop["sigterm"])], device=rt.device, dtype=torch.float64)
            packed = torch.cat([comp_sum.double() / accum, tokens.reshape(1), flags])
            if rt.distributed:
                torch.distributed.all_reduce(packed)
                packed[: len(names)] /= rt.world_size
            packed_list = packed.tolist()
            comps = dict(zip(names, packed_list[: len(names)]))
            bad = [n for n, v in comps.items() if not math.isfinite(v)]
            if bad:
                good = latest_checkpoint(ckpt_dir)
                raise NonFiniteLossError(
                    f"step {state.step + 1}: non-finite loss component(s) {', '.join(bad)} "
                    f"({', '.join(f'{n}={comps[n]}' for n in bad)}); no update was applied; "
                    f"last good checkpoint: {good if good else 'none written yet'}"
                )
            if cfg["max_grad_norm"] is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            step_tokens = int(packed_list[len(names)])
            state.tokens_seen += step_tokens
            run_tokens += step_tokens
            window = torch.tensor(packed_list[: len(names)], dtype=torch.float64)
            window_sum = window if window_sum is None else window_sum + window
            window_steps += 1
            bar.update(1)
            if state.step % cfg["log_interval"] == 0 or state.step == total_steps:
                last_logged = {n: v / window_steps for n, v in zip(names, window_sum.tolist())}
                window_sum, window_steps = None, 0
                if rt.is_main:
                    record = {"step": state.step, "epoch": state.epoch, "lr": scheduler.get_last_lr()[0],
                              "tokens_seen": state.tokens_seen,
                              "elapsed_seconds": round(wall_before + time.perf_counter() - start, 3), **last_logged}
                    _append_log(log_path, record)
                    bar.set_postfix({n: f"{v:.4g}" for n, v in last_logged.items() if n == "total" or len(names) < 4})
            if packed_list[-1] > 0:  # SIGTERM on some rank
                path = checkpoint()
                raise TrainingInterrupted(
                    f"SIGTERM at step {state.step}: checkpoint {path or ckpt_dir} written; restart to resume"
                )
            if state.step % cfg["checkpoint_interval"] == 0 and state.step < total_steps:
                checkpoint()
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)

    wall = time.perf_counter() - start
    state.wall_seconds = wall_before + wall
    metrics = {
        "loss": last_logged,
        **{k: v for k, v in last_logged.items()},
        "steps": state.step,
        "tokens_seen": state.tokens_seen,
        "wall_seconds": state.wall_seconds,
        "tokens_per_second": run_tokens / wall if wall > 0 else None,
        "peak_memory_bytes": peak_memory_bytes(rt.device),
        "world_size": rt.world_size,
        "bf16": rt.bf16,
        "device": str(rt.device.type),
        "config": run_config,
        "config_hash": full_hash,
    }
    if rt.is_main:
        with atomic_directory(output_dir / "model") as tmp:
            job.save_model(tmp)
        write_json_atomic(output_dir / "metrics.json", metrics)
    if rt.distributed:
        torch.distributed.barrier()
    return metrics


def shutdown_runtime() -> None:
    """Tear down the process group if this process started one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
