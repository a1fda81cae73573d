"""Parameter-efficient tuning and parameter counts, for MiniALBERT and for any other encoder
(above the model: the modules it adds, `BottleneckAdapter` and `RecursionRelaxation`, are the
building blocks of `minialbert.blocks`).

- `add_adapters(model, reduction_factor)`: MiniALBERT gets its own per-recursion adapter pairs
  (REFERENCE section 1); any other encoder (BERT, DistilBERT, hub ALBERT) gets Houlsby adapters
  after each layer's attention-output and FFN-output projections. Both start near the identity.
- `freeze_for_adapter_tuning(model)`: train only the tunable modules and the task head, found
  by module type and by where they sit (inside or outside `model.base_model`), never by name.
- `prepare_for_adapter_tuning(model, reduction_factor)`: both, as `finetune --mode adapter` does.
- `count_parameters(model)`: {unique, total, trainable}, the shared layer counted per recursion.

A new per-recursion method fits beside these: its module class in `minialbert.blocks` and its
class in `TUNABLE_MODULES`, which is all that freezing by structure needs to know.
"""

from __future__ import annotations

from torch import nn

from .blocks import BottleneckAdapter, RecursionRelaxation
from .modeling import MiniAlbertModel
from .utils import ConfigError


# --------------------------------------------------------------------------------------------
# Tunable modules
# --------------------------------------------------------------------------------------------
# What adapter tuning trains inside the encoder: everything a recursion owns. The rest of the
# encoder (embeddings, projector, shared layers) is frozen.
TUNABLE_MODULES: tuple[type[nn.Module], ...] = (BottleneckAdapter, RecursionRelaxation)


# --------------------------------------------------------------------------------------------
# Adding adapters
# --------------------------------------------------------------------------------------------
def minialbert_encoder(model: nn.Module):
    """The MiniAlbertModel of a MiniALBERT model (itself, or its `base_model`), else None."""
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
