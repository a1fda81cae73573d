"""Checkpoints of a training run: `step-N` dirs written atomically outside the output model dir
(model, optimizer, scheduler, loss scaler, RNG states, TrainState, the batch layout), found
again on restart, and refused when they were written by a run that computes something else.
A run that completes removes them (`finish_checkpoints`), or marks them finished when it keeps
them: a finished run is never resumed, so a forced rerun starts at step 0.

meta.json's `resume_identity` hashes the run config without its operational keys, so a change
of logging or checkpoint cadence still resumes. It is not metrics.json's `config_hash` (the
whole config); checkpoints written before the rename carry it under `config_hash`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from minialbert.utils import ConfigError, atomic_directory, config_hash, write_json_atomic

_CKPT_RE = re.compile(r"^step-(\d+)$")
FINISHED = "finished.json"  # in a checkpoint dir: the run completed (its checkpoints were kept on request)


@dataclass
class TrainState:
    """Where a run is: optimizer steps done, data position (epoch, global batches (= steps) taken
    in it), totals so far, and the loss sums since the last log line (so that the first line after
    a resume averages the same steps as the uninterrupted run's)."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    wall_seconds: float = 0.0
    log_sums: dict[str, float] = field(default_factory=dict)
    log_steps: int = 0


def resume_identity(run_config: Mapping[str, Any], operational_keys: Iterable[str]) -> str:
    """Hash of what a run computes: the resolved config without the operational `training:` keys."""
    cfg = json.loads(json.dumps(run_config, default=str))
    training = cfg.get("training", {})
    for key in operational_keys:
        training.pop(key, None)
    return config_hash(cfg)


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step in `checkpoint_dir` (None if there is none)."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and (p / "meta.json").is_file()]
    return max(found)[1] if found else None


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch, CUDA), as plain lists and tensors only,
    so that `torch.load(weights_only=True)` can read them back."""
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
        # A resume on fewer or other GPUs than the run that saved it keeps the fresh CUDA streams.
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(checkpoint_dir: Path, *, module, optimizer, scheduler, state: TrainState, identity: str,
                    keep: int, layout: Mapping[str, int], scaler=None, rng_states: list[dict] | None = None,
                    files: Iterable[Path] = ()) -> Path:
    """Write `checkpoint_dir/step-N` atomically (with a copy of each of `files` that exists: the
    run's history, which a restarted job's output dir may have lost), then prune all but the
    newest `keep`. `layout`: how the global batch was split (world_size, micro_batch_size,
    accumulation, batch_size), read back by `checkpoint_layout`; `scaler`: fp16's GradScaler;
    `rng_states`: every rank's `rng_state()` (default: this process's only)."""
    rng_states = rng_states or [rng_state()]
    dst = checkpoint_dir / f"step-{state.step:08d}"
    with atomic_directory(dst) as tmp:
        for path in files:
            if Path(path).is_file():
                shutil.copyfile(path, tmp / Path(path).name)
        blob = {
            "module": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states[0],  # rank 0's (a resume on another number of processes restores this one)
            "rng_ranks": rng_states,
            "state": vars(state).copy(),
        }
        if scaler is not None:
            blob["scaler"] = scaler.state_dict()
        torch.save(blob, tmp / "state.pt")
        write_json_atomic(tmp / "meta.json", {"step": state.step, "resume_identity": identity, "state": vars(state),
                                              "layout": dict(layout)})
    old = sorted((int(m.group(1)), p) for p in checkpoint_dir.iterdir() if (m := _CKPT_RE.match(p.name)))
    for _, p in old[:-keep]:
        shutil.rmtree(p, ignore_errors=True)
    return dst


def checkpoint_layout(path: Path) -> dict[str, int]:
    """The batch layout a checkpoint was written with; a checkpoint from before the global batch
    (it has none: its data position counts one process's batches) is refused."""
    meta = json.loads((path / "meta.json").read_text())
    if "layout" not in meta:
        raise ConfigError(
            f"{path}: checkpoint was written before training.batch_size became the global batch (it records "
            f"no batch layout, so its data position cannot be placed); delete it, or point "
            f"training.checkpoint_dir elsewhere, to start afresh")
    return meta["layout"]


def load_checkpoint(path: Path, *, module, optimizer, scheduler, identity: str, restore_rng: bool,
                    scaler=None, rank: int = 0) -> TrainState:
    """Restore a checkpoint written by this config; a checkpoint of another config is refused.
    `restore_rng`: set the RNG states of `rank` (rank 0's when the checkpoint has none for it)."""
    meta = json.loads((path / "meta.json").read_text())
    written = meta.get("resume_identity", meta.get("config_hash"))  # config_hash: written before the rename
    if written != identity:
        raise ConfigError(
            f"{path}: checkpoint was written by a different config (resume_identity {written}, this run "
            f"{identity}); delete it, or point training.checkpoint_dir elsewhere to start afresh"
        )
    blob = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    module.load_state_dict(blob["module"])
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    if scaler is not None and "scaler" in blob:
        scaler.load_state_dict(blob["scaler"])
    if restore_rng:
        ranks = blob.get("rng_ranks", [blob["rng"]])
        _set_rng_state(ranks[rank] if rank < len(ranks) else blob["rng"])
    return TrainState(**blob["state"])


def finished_run(checkpoint_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The record a completed run left in `checkpoint_dir` when it kept its checkpoints, else None."""
    marker = Path(checkpoint_dir) / FINISHED
    return json.loads(marker.read_text()) if marker.is_file() else None


def finish_checkpoints(checkpoint_dir: str | os.PathLike, *, keep: bool, step: int, identity: str) -> None:
    """After a run completed: remove its checkpoints (and the dir, when nothing else is in it), or,
    with `keep`, mark them finished so that they are never resumed."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return
    if keep:
        write_json_atomic(d / FINISHED, {"step": step, "resume_identity": identity})
        return
    clear_checkpoints(d)
    with contextlib.suppress(OSError):  # not empty: something else lives there
        d.rmdir()


def clear_checkpoints(checkpoint_dir: str | os.PathLike) -> None:
    """Remove every `step-N` dir (complete or half-written) and the finished mark of `checkpoint_dir`."""
    d = Path(checkpoint_dir)
    if not d.is_dir():
        return
    for p in d.iterdir():
        if _CKPT_RE.match(p.name) or (p.name.startswith(".step-") and p.is_dir()):
            shutil.rmtree(p, ignore_errors=True)
    (d / FINISHED).unlink(missing_ok=True)
