"""The per-recursion building blocks of a MiniALBERT layer, below the model:

- `BottleneckAdapter`: x + Up(GELU(Down(x))) with an optional LayerNorm (the paper's adapters,
  and the Houlsby adapters `minialbert.adapters` puts into other encoders);
- `RelaxedLinear` / `RecursionRelaxation`: what one recursion of a relaxed MiniALBERT owns
  besides its adapters (LoRA deltas, LayerNorms, biases of the shared layer's linears; Bae et
  al. 2025).

Injecting adapters into a trained model and freezing for adapter tuning sit above the model,
in `minialbert.adapters`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BottleneckAdapter(nn.Module):
    """x + Up(GELU(Down(x))), Down: H -> bottleneck, Up: bottleneck -> H, then LayerNorm when
    `layer_norm_eps` is given.

    MiniALBERT's per-recursion adapters have the LayerNorm: B(x) = LayerNorm(x + Up(GELU(Down(x)))),
    as the authors'. Houlsby adapters inside another encoder have none: the sub-layer's own residual
    add and LayerNorm follow them. The Linear layers keep torch's default init here; the model's
    `_init_weights` (a new MiniALBERT) or `init_near_identity` (a trained model) sets them.
    """

    def __init__(self, hidden_size: int, bottleneck_size: int, layer_norm_eps: float | None = None):
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck_size)
        self.up = nn.Linear(bottleneck_size, hidden_size)
        self.norm = None if layer_norm_eps is None else nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    @torch.no_grad()
    def init_near_identity(self, std: float = 0.02) -> BottleneckAdapter:
        """Down ~ N(0, std), Up = 0: the adapter adds nothing until trained, so adding it to a
        trained model leaves that model's outputs unchanged (up to the LayerNorm, if any)."""
        nn.init.normal_(self.down.weight, std=std)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        return self

    def forward(self, x):  # (B, T, H) -> (B, T, H)
        h = x + self.up(F.gelu(self.down(x)))  # exact GELU, as the authors
        return h if self.norm is None else self.norm(h)


# Where each relaxable linear / LayerNorm sits inside a MiniAlbertLayer.
TARGET_PATHS = {"query": "attention.query", "key": "attention.key", "value": "attention.value",
                "dense": "attention.dense", "ffn": "feed_forward.ffn", "ffn_output": "feed_forward.ffn_output"}
NORM_PATHS = {"attention": "attention.LayerNorm", "ffn": "feed_forward.full_layer_layer_norm"}


class RelaxedLinear(nn.Module):
    """One recursion's change to one shared linear W (out x in), b: the LoRA factors `lora_A`
    (r x in) and `lora_B` (out x r), scaled by alpha / r, and/or its own `bias` (out)."""

    def __init__(self, out_features: int, in_features: int, rank: int, scale: float, own_bias: bool):
        super().__init__()
        self.scale = scale
        self.lora_A = nn.Parameter(torch.empty(rank, in_features)) if rank else None
        self.lora_B = nn.Parameter(torch.empty(out_features, rank)) if rank else None
        self.bias = nn.Parameter(torch.empty(out_features)) if own_bias else None

    def effective(self, linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) this recursion applies in place of `linear`'s."""
        weight = linear.weight
        if self.lora_A is not None:
            weight = weight + self.scale * (self.lora_B @ self.lora_A)
        return weight, linear.bias if self.bias is None else self.bias


class RecursionRelaxation(nn.Module):
    """What recursion i of a relaxed MiniALBERT owns (config.lora_rank, relax_norms, relax_biases):

    - `linears[t]` (a `RelaxedLinear`) per target linear t: its LoRA delta, so the recursion
      applies W_t + (alpha / r) B A instead of the shared W_t, and/or its own bias (the shared
      linear then has none);
    - `norms["attention"]`, `norms["ffn"]`: its own two LayerNorms (the shared layer then has none).
    `overrides(layer)` builds the effective parameters once per forward (an r x in x out cost
    per target, not extra matmuls over the activations). A new model starts them at A ~ N(0, std),
    B = 0, biases 0, norms 1/0 (its `_init_weights`); `minialbert.student` fits them to a
    teacher instead.
    """

    def __init__(self, config):
        super().__init__()
        self.linears = None
        if config.lora_rank or config.relax_biases:
            self.linears = nn.ModuleDict({
                t: RelaxedLinear(o, i, config.lora_rank, config.lora_scale, config.relax_biases)
                for t, (o, i) in relaxation_shapes(config).items()
            })
        self.norms = None
        if config.relax_norms:
            self.norms = nn.ModuleDict({k: nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                                        for k in NORM_PATHS})

    def overrides(self, layer: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """{path in the layer: (weight, bias)} of every linear and norm this recursion changes."""
        out = {TARGET_PATHS[t]: relaxed.effective(layer.get_submodule(TARGET_PATHS[t]))
               for t, relaxed in (self.linears or {}).items()}
        for k, norm in (self.norms or {}).items():
            out[NORM_PATHS[k]] = (norm.weight, norm.bias)
        return out


def relaxation_shapes(config) -> dict[str, tuple[int, int]]:
    """(out, in) features of each relaxed target linear of a MiniALBERT layer."""
    H, I = config.hidden_size, config.intermediate_size
    shapes = {"query": (H, H), "key": (H, H), "value": (H, H), "dense": (H, H), "ffn": (I, H), "ffn_output": (H, I)}
    return {t: shapes[t] for t in config.relaxation_targets}
