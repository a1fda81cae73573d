"""Dropout for the student: torch's in eager mode; a counter-based one in a compiled CPU step.

Why two: torch.compile's CPU backend (inductor's C++ code) draws every random number with a
scalar Philox call per element (`normalized_rand_cpu`), about 11 ns each. A distillation step at
the issue-#3 shape (6 recursions, B 16, T 128, 4 heads) drops 12.8 million elements, so its
masks took 146 ms of a 1.4 s compiled step, more than eager's bernoulli (about 8 ns an element).

`counter_dropout` draws its mask from a keyed integer hash of each element's index: two 32-bit
keys drawn from torch's generator per call (so `torch.manual_seed` and a checkpoint's saved RNG
state reproduce it, and resume stays exact), then two rounds of the lowbias32 mixer (Wellons'
hash prospector; `_mix`). It is made of plain integer tensor ops, so inductor fuses it into the
kernel that applies it, vectorised; eager runs the same ops (tests compare the two).

The compiled step already draws other masks than eager (inductor's Philox against ATen's
generator), so the choice changes no promise: compiled and eager agree without dropout, and
each is deterministic given its seed. Eager keeps torch's dropout, so eager runs (the demo, every
default) are unchanged. On a GPU, inductor's vectorised Philox is fast: torch's dropout there.

Mask resolution: the keep test compares 24 hash bits with round(p * 2**24), so p is exact to
6e-8. A call needs fewer than 2**31 elements (int32 counters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_MASK_BITS = 24


def _mix(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors: wrapping multiplies, logical shifts (arithmetic shift, masked)."""
    x = x ^ ((x >> 16) & 0xFFFF)
    x = x * 0x7FEB352D
    x = x ^ ((x >> 15) & 0x1FFFF)
    x = x * -0x7B93_5975  # 0x846CA68B as a signed int32
    return x ^ ((x >> 16) & 0xFFFF)


def counter_keep_mask(shape, p: float, keys: torch.Tensor) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask of `shape` from the int32 `keys` (2,): element i keeps when 24
    bits of mix(mix(i + keys[0]) ^ keys[1]) are at least round(p * 2**24)."""
    numel = math.prod(shape)
    if numel >= 2**31:
        raise ValueError(f"counter_dropout: {numel} elements in one call; at most 2**31 - 1 (int32 counters)")
    index = torch.arange(numel, dtype=torch.int32, device=keys.device).view(shape)
    h = _mix(_mix(index + keys[0]) ^ keys[1])
    return ((h >> (32 - _MASK_BITS)) & ((1 << _MASK_BITS) - 1)) >= round(p * 2**_MASK_BITS)


# The keys' draw is an opaque operator tagged as seeded randomness: inside a compiled graph it is
# one ATen call (torch's generator, as in eager) whose output is saved for the backward, where
# inductor would otherwise inline a scalar Philox draw of both keys into every vector of the kernel
# that applies the mask, and draw them again in the backward kernel.
_LIB = torch.library.Library("minialbert", "DEF")
_LIB.define("dropout_keys(Tensor like) -> Tensor", tags=(torch.Tag.nondeterministic_seeded,))


@torch.library.impl(_LIB, "dropout_keys", "CompositeExplicitAutograd")
def _dropout_keys(like: torch.Tensor) -> torch.Tensor:
    return torch.randint(-(2**31), 2**31 - 1, (2,), dtype=torch.int64, device=like.device).to(torch.int32)


@torch.library.register_fake("minialbert::dropout_keys")
def _dropout_keys_fake(like: torch.Tensor) -> torch.Tensor:
    return torch.empty(2, dtype=torch.int32, device=like.device)


def draw_keys(like: torch.Tensor) -> torch.Tensor:
    """Two int32 keys from torch's default generator, on `like`'s device."""
    return torch.ops.minialbert.dropout_keys(like)


def counter_dropout(x: torch.Tensor, p: float, keys: torch.Tensor | None = None) -> torch.Tensor:
    """Inverted dropout of `x` with the counter-based mask (fresh keys unless `keys` is given)."""
    if p >= 1:
        return x * 0.0
    keys = draw_keys(x) if keys is None else keys
    keep = counter_keep_mask(x.shape, p, keys)
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype, device=x.device))


def uses_counter_dropout(x: torch.Tensor) -> bool:
    """The compiled CPU step draws counter-based masks (module docstring); everything else, torch's."""
    return x.device.type == "cpu" and torch.compiler.is_compiling()


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, or `counter_dropout` inside a compiled CPU step."""
    if not training or p == 0:
        return x
    if uses_counter_dropout(x):
        return counter_dropout(x, p)
    return F.dropout(x, p, True)


class Dropout(nn.Module):
    """nn.Dropout's drop-in (same argument, no state): `dropout` above."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
