"""Parameter-efficient tuning and parameter counts, for MiniALBERT and for any other encoder.

- `BottleneckAdapter`: the one adapter module, x + Up(GELU(Down(x))) with an optional LayerNorm.
- `add_adapters(model, reduction_factor)`: MiniALBERT gets its own per-recursion adapter pairs
  (REFERENCE section 1); any other encoder (BERT, DistilBERT, hub ALBERT) gets Houlsby adapters
  after each layer's attention-output and FFN-output projections. Both start near the identity.
- `freeze_for_adapter_tuning(model)`: train only the tunable modules and the task head, found
  by module type and by where they sit (inside or outside `model.base_model`), never by name.
- `prepare_for_adapter_tuning(model, reduction_factor)`: both, as `finetune --mode adapter` does.
- `count_parameters(model)`: {unique, total, trainable}, the shared layer counted per recursion.

- `RecursionRelaxation`: what one recursion of a relaxed MiniALBERT owns besides its adapters
  (LoRA deltas, LayerNorms, biases of the shared layer's linears; Bae et al. 2025).

A new per-recursion method fits beside these: its module class in the first section and its
class in `TUNABLE_MODULES`, which is all that freezing by structure needs to know.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .utils import ConfigError


# --------------------------------------------------------------------------------------------
# Tunable modules
# --------------------------------------------------------------------------------------------
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
    B = 0, biases 0, norms 1/0 (its `_init_weights`); `minialbert.student_init` fits them to a
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


# What adapter tuning trains inside the encoder: everything a recursion owns. The rest of the
# encoder (embeddings, projector, shared layers) is frozen.
TUNABLE_MODULES: tuple[type[nn.Module], ...] = (BottleneckAdapter, RecursionRelaxation)


# --------------------------------------------------------------------------------------------
# Adding adapters
# --------------------------------------------------------------------------------------------
def minialbert_encoder(model: nn.Module):
    """The MiniAlbertModel of a MiniALBERT model (itself, or its `base_model`), else None."""
    from .modeling import MiniAlbertModel  # here, not at the top: modeling imports this module

    if isinstance(model, MiniAlbertModel):
        return model
    base = getattr(model, "base_model", None)
    return base if isinstance(base, MiniAlbertModel) else None


def add_adapters(model: nn.Module, reduction_factor: int | None = None) -> list[BottleneckAdapter]:
    """Give `model` bottleneck adapters initialised near the identity; return its adapters.

    MiniALBERT: one adapter pair per recursion (`MiniAlbertModel.add_adapters`), sized by its
    config's `reduction_factor` whatever is passed here (the adapters belong to its architecture
    and are rebuilt from config.json); adapters it already has, e.g. from distillation, are kept
    and go on training, as the authors did. Any other encoder: Houlsby adapters of width
    H // reduction_factor (default 16) after every attention-output and FFN-output projection.
    """
    base = minialbert_encoder(model)
    if base is not None:
        base.add_adapters()
        return [*base.att_adapters, *base.ffn_adapters]
    return add_houlsby_adapters(model, 16 if reduction_factor is None else reduction_factor)


class AdaptedLinear(nn.Module):
    """A sub-layer's output projection followed by an adapter, before the residual add and
    LayerNorm that the surrounding module applies (where Houlsby et al. 2019 place it)."""

    def __init__(self, linear: nn.Linear, adapter: BottleneckAdapter):
        super().__init__()
        self.linear = linear
        self.adapter = adapter

    def forward(self, x):
        return self.adapter(self.linear(x))


def _transformer_layers(base: nn.Module, hidden: int) -> list[nn.Module]:
    """The repeated transformer layers: the innermost ModuleList whose items each hold an
    attention output projection Linear(H, H) and an FFN output projection Linear(I, H)."""

    def is_layer(module: nn.Module) -> bool:
        shapes = [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]
        return (hidden, hidden) in shapes and any(o == hidden and i != hidden for i, o in shapes)

    candidates = [m for m in base.modules() if isinstance(m, nn.ModuleList) and len(m) and all(is_layer(x) for x in m)]
    innermost = [c for c in candidates if not any(o is not c and any(o is m for m in c.modules()) for o in candidates)]
    if not innermost:
        raise ConfigError(f"adapter mode: found no transformer layers in {type(base).__name__} "
                          f"(a ModuleList of layers with Linear({hidden},{hidden}) and Linear(I,{hidden}))")
    return [layer for c in innermost for layer in c]


def _output_projections(layer: nn.Module, hidden: int) -> tuple[nn.Linear, nn.Linear]:
    """(attention output, FFN output) projections of one layer, by shape and order: the last
    Linear(H, H) (after the Q/K/V projections) and the last Linear(I, H), I != H."""
    linears = [m for m in layer.modules() if isinstance(m, nn.Linear)]
    square = [m for m in linears if (m.in_features, m.out_features) == (hidden, hidden)]
    ffn_out = [m for m in linears if m.out_features == hidden and m.in_features != hidden]
    if not square or not ffn_out:
        raise ConfigError(f"adapter mode: cannot find the output projections in {type(layer).__name__}")
    return square[-1], ffn_out[-1]


def _replace_child(root: nn.Module, target: nn.Module, new: nn.Module) -> None:
    for module in root.modules():
        for name, child in module.named_children():
            if child is target:
                setattr(module, name, new)
                return
    raise RuntimeError("module to wrap not found")  # cannot happen: target came from root.modules()


def add_houlsby_adapters(model: nn.Module, reduction_factor: int = 16) -> list[BottleneckAdapter]:
    """Wrap each layer's attention-output and FFN-output projections of a BERT-family,
    DistilBERT or hub ALBERT encoder with a near-identity adapter. Returns the new adapters."""
    if any(isinstance(m, AdaptedLinear) for m in model.modules()):
        raise ConfigError("adapter mode: the model already has bottleneck adapters")
    base = getattr(model, "base_model", model)
    hidden = model.config.hidden_size
    std = getattr(model.config, "initializer_range", 0.02)
    adapters = []
    for layer in _transformer_layers(base, hidden):
        for projection in _output_projections(layer, hidden):
            adapter = BottleneckAdapter(hidden, max(1, hidden // reduction_factor)).init_near_identity(std)
            adapter.to(projection.weight)
            _replace_child(layer, projection, AdaptedLinear(projection, adapter))
            adapters.append(adapter)
    return adapters


# --------------------------------------------------------------------------------------------
# Freezing by structure
# --------------------------------------------------------------------------------------------
def freeze_for_adapter_tuning(model: nn.Module, tunable: tuple[type[nn.Module], ...] = TUNABLE_MODULES) -> nn.Module:
    """Train only the `tunable` modules inside the encoder (`model.base_model`) and the task
    head (whatever sits outside the encoder); freeze the rest. In place; returns the model."""
    base = getattr(model, "base_model", model)
    found = [m for m in base.modules() if isinstance(m, tunable)]
    if not found:
        names = ", ".join(t.__name__ for t in tunable)
        raise ConfigError(f"adapter mode: {type(model).__name__} has no {names} modules to train; add them first")
    model.requires_grad_(True)  # the head
    base.requires_grad_(False)
    for module in found:
        module.requires_grad_(True)
    return model


def prepare_for_adapter_tuning(model: nn.Module, reduction_factor: int | None = None) -> nn.Module:
    """Add near-identity adapters (see `add_adapters`) and freeze everything but them and the
    task head, in place; returns the model. `minialbert finetune --mode adapter` for any encoder."""
    add_adapters(model, reduction_factor)
    return freeze_for_adapter_tuning(model)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts of any torch module.

    - `unique`: distinct parameter tensors (what is stored on disk);
    - `total`: parameters as executed, so a MiniALBERT's shared layer counts once per
      recursion that applies it (what an unshared model of the same depth would need);
    - `trainable`: distinct tensors with requires_grad.
    Pass `model.base_model` for the encoder alone (no task or MLM head).
    """
    from .modeling import MiniAlbertModel

    unique = {id(p): p for p in model.parameters()}
    counts = {
        "unique": sum(p.numel() for p in unique.values()),
        "trainable": sum(p.numel() for p in unique.values() if p.requires_grad),
    }
    repeated = sum(
        (m.config.recursion_layers.count(j) - 1) * sum(p.numel() for p in layer.parameters())
        for m in model.modules()
        if isinstance(m, MiniAlbertModel)
        for j, layer in enumerate(m.shared_layers)
    )
    counts["total"] = counts["unique"] + repeated
    return counts
