"""MLM batches for the training loop: a windows dataset -> deterministic global batches, split
over the ranks and gradient accumulation, padded and MLM-masked (15%, 80/10/10) per micro-batch.

Each micro-batch carries a masking seed derived from (seed, epoch, micro-batch index), and a
resume skips the steps already taken without reading them: a resumed run sees exactly the
batches and masks the uninterrupted run would have seen (on another number of processes: the
same global batches, in the same order).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from minialbert.utils import ConfigError

WINDOW_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")


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


def _batch_seed(seed: int, epoch: int, rank: int, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class ResumableBatches:
    """Batches of dataset row indices, laid out globally so that the number of processes does
    not change what is trained: a fresh permutation per epoch (seeded) cut into global batches
    of `batch_size` rows (one per optimizer step; an epoch's last one may be shorter), each cut
    into `micro_batches` equal micro-batches (a short last batch is topped up from the epoch's
    start to a multiple of them), micro-batch j of a step going to rank j // (micro_batches /
    world_size) as its (j % that)-th accumulation step. Each micro-batch is tagged with a
    masking seed from (seed, epoch, its index among the epoch's micro-batches), not the rank,
    so one process accumulating two micro-batches sees the rows and masks two processes see.
    `epoch_steps(epoch, start)` skips the first `start` steps without touching the data, which
    is how a resume finds its place, on any number of processes."""

    def __init__(self, num_rows: int, batch_size: int, micro_batches: int = 1, *, seed: int, rank: int = 0,
                 world_size: int = 1):
        if num_rows == 0:
            raise ConfigError("windows dataset: it has no rows")
        if micro_batches % world_size:
            raise ValueError(f"{micro_batches} micro-batches per step cannot be shared by {world_size} processes")
        self.num_rows, self.batch_size, self.micro_batches, self.seed = num_rows, batch_size, micro_batches, seed
        self.rank, self.world_size = rank, world_size
        self.accumulation = micro_batches // world_size
        self.steps_per_epoch = math.ceil(num_rows / batch_size)

    def epoch_steps(self, epoch: int, start: int = 0) -> list[list[list[tuple[int, int]]]]:
        """This rank's micro-batches of the epoch's steps from `start` on: [step][accumulation step] ->
        [(row, masking seed), ...]."""
        g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
        order = torch.randperm(self.num_rows, generator=g).tolist()
        n = self.micro_batches
        out = []
        for step in range(start, self.steps_per_epoch):
            rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            rows = rows + (order * n)[: -len(rows) % n]  # a short last batch: equal micro-batches
            size = len(rows) // n
            mine = range(self.rank * self.accumulation, (self.rank + 1) * self.accumulation)
            # "rank" 0 in every seed: one process with one micro-batch a step keeps the seeds (and
            # so the masks) it drew before batch_size became the global batch
            out.append([[(i, _batch_seed(self.seed, epoch, 0, step * n + j)) for i in rows[j * size : (j + 1) * size]]
                        for j in mine])
        return out


class TaggedRows(torch.utils.data.Dataset):
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


def masked_positions_from_labels(labels: torch.Tensor, multiple_of: int = 8, budget: int | None = None
                                 ) -> torch.Tensor:
    """Flat indices of labelled positions, padded with -1 to a multiple of `multiple_of`, or to
    `budget` entries (a fixed K: every batch has the same shape) when they fit in it.
    (On the CPU, in the collator, so the training step never waits on a data-dependent size.)"""
    flat = (labels.reshape(-1) != -100).nonzero().squeeze(1)
    k = max(multiple_of, -(-flat.numel() // multiple_of) * multiple_of)
    if budget is not None:
        if flat.numel() > budget:
            # Some 6 standard deviations above the mean (`masked_budget`): all positions are
            # kept (the loss stays exact) at the cost of one new shape (a recompile).
            warnings.warn(f"{flat.numel()} masked positions exceed the fixed budget of {budget}: this batch "
                          f"has its own shape", stacklevel=2)
        k = max(k, budget)
    out = torch.full((k,), -1, dtype=torch.long, device=labels.device)
    out[: flat.numel()] = flat
    return out


def masked_budget(batch_size: int, length: int, mlm_probability: float) -> int:
    """A fixed number K of masked positions per (batch_size, length) batch that a batch exceeds
    with negligible probability: the mean of the binomial count over all B x T positions plus 6
    standard deviations (special tokens and padding are never masked, so the true count is
    lower), rounded up to a multiple of 8. Padding entries (-1) weigh zero in every loss."""
    n = batch_size * length
    mean, sd = n * mlm_probability, math.sqrt(n * mlm_probability * (1 - mlm_probability))
    return min(-(-n // 8) * 8, -(-math.ceil(mean + 6 * sd) // 8) * 8)


def longest_window(dataset) -> int:
    """The longest row of a windows dataset's input_ids (read from the Arrow lengths, not the rows)."""
    import pyarrow.compute as pc

    column = dataset.data.column("input_ids")
    return int(pc.max(pc.list_value_length(column)).as_py() or 0)


class SeededMLMCollator:
    """Pads and MLM-masks a batch with `DataCollatorForLanguageModeling` (15%, 80/10/10 by
    default), re-seeding its generator from the batch's tag so masks are reproducible. Adds
    `masked_positions` (flat indices of the labelled positions, padded with -1).

    `pad_to` L: every batch is padded to exactly L tokens and its masked positions to
    `masked_budget` entries, so that every step has one shape (a compiled step never retraces,
    CUDA graphs become possible); the masks are drawn over the padded shape, so they differ from
    those of dynamic padding (same distribution)."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15, *, pad_to: int | None = None,
                 batch_size: int | None = None):
        from transformers import DataCollatorForLanguageModeling

        self.pad_to = pad_to
        self.budget = None if pad_to is None else masked_budget(batch_size, pad_to, mlm_probability)
        # Padding to a multiple of L pads to exactly L when no window is longer (checked per batch).
        self.collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=True, mlm_probability=mlm_probability,
                                                        pad_to_multiple_of=pad_to)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seed = examples[0].pop("_seed", None)
        if self.pad_to is not None:
            longest = max(len(e["input_ids"]) for e in examples)
            if longest > self.pad_to:
                raise ConfigError(f"training.pad_to: {self.pad_to}, but a window has {longest} tokens "
                                  f"(expected max_length, or a length >= the longest window)")
        self.collator.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        batch = dict(self.collator(examples))
        # (K,): K a multiple of 8, or the fixed budget
        batch["masked_positions"] = masked_positions_from_labels(batch["labels"], budget=self.budget)
        return batch
