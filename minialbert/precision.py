"""The mixed-precision rule shared by distillation, teacher pretraining and fine-tuning.

`bf16: auto` (the configs' default) picks
- bf16 autocast on a GPU with native bf16, i.e. compute capability >= 8.0 (A100, H100, ...).
  `torch.cuda.is_bf16_supported()` is not the test: it also says yes on V100/T4 (7.x), where
  bf16 is emulated and slower than fp32;
- fp16 autocast with a GradScaler (dynamic loss scaling) on an older GPU;
- fp32 on the CPU, where autocast brings no speed.
`bf16: true` forces bf16 autocast (also on the CPU, as the precision tests do), `false` fp32.
On CUDA, fp32 matmuls may use TF32 (`enable_tf32`): what stays fp32 under autocast (the
numerically touchy softmaxes and KLs of the objective, which leave autocast on purpose) is
still fast on tensor cores, at TF32's 10-bit mantissa.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch

NATIVE_BF16_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class Precision:
    """How one run computes: the autocast dtype (None: fp32) and whether losses are scaled (fp16)."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def scales_loss(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.dtype is torch.float16

    def autocast(self):
        """The autocast context of the forward pass (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16, None otherwise (its state belongs in a checkpoint)."""
        return torch.amp.GradScaler(self.device_type) if self.scales_loss else None


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA device of compute capability >= 8.0 (emulated bf16 on older GPUs does not count)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= NATIVE_BF16_CAPABILITY


def choose_precision(setting: Literal["auto"] | bool, device: torch.device) -> Precision:
    """The precision of a run on `device` for a config's `bf16` value (module docstring)."""
    if setting is True:
        return Precision(device.type, torch.bfloat16)
    if setting is False or device.type != "cuda":
        return Precision(device.type)
    return Precision(device.type, torch.bfloat16 if native_bf16(device) else torch.float16)


def enable_tf32(device: torch.device) -> None:
    """Let fp32 matmuls and convolutions use TF32 tensor cores on CUDA (a no-op elsewhere)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
