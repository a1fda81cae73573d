"""Starting a MiniALBERT student from its teacher (Bae et al. 2025, "Relaxed Recursive Transformers").

Recursion i of the student corresponds to teacher layer `layer_map[i]` (the distillation's
layer map); recursion i applies unique layer `pattern[i]` (`MiniAlbertConfig.recursion_layers`).

- `init_from_teacher` copies teacher layers into the M shared layers:
  - `stepwise`: unique layer j <- the teacher layer of the first recursion that applies j;
  - `average`:  unique layer j <- the element-wise mean of the teacher layers of all the
                recursions that apply j (LayerNorm parameters included);
  - `lower`:    unique layer j <- teacher layer j.
  The embeddings and the MLM head are copied too (done by the caller, `distill.build_student`).
- `lora_init: svd` starts recursion i's LoRA delta at the best rank-r approximation of the
  residual W_teacher[layer_map[i]] - W_shared[pattern[i]] (truncated SVD), so B A reproduces
  what sharing lost as far as rank r allows; rank = H makes every recursion its teacher layer.
- The recursions' own LayerNorms and biases (relaxed) start from their teacher layer.

Only BERT-family teachers (`encoder.layer[*]` of BertLayer shape) can seed layers; the shapes
must match: `check_compatible` names every field that differs.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from minialbert.adapters import NORM_PATHS, TARGET_PATHS
from minialbert.utils import ConfigError

INIT_METHODS = ("stepwise", "average", "lower")

# our path inside a MiniAlbertLayer -> the same parameter's path inside a BertLayer
BERT_LAYER_PATHS = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.dense": "attention.output.dense",
    "attention.LayerNorm": "attention.output.LayerNorm",
    "feed_forward.ffn": "intermediate.dense",
    "feed_forward.ffn_output": "output.dense",
    "feed_forward.full_layer_layer_norm": "output.LayerNorm",
}
SHAPE_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act")


def check_compatible(student_config, teacher_config, key: str) -> None:
    """ConfigError naming every shape field in which student and teacher differ."""
    differ = [f"{f} (student {getattr(student_config, f)!r}, teacher {getattr(teacher_config, f, None)!r})"
              for f in SHAPE_FIELDS if getattr(student_config, f) != getattr(teacher_config, f, None)]
    if differ:
        raise ConfigError(f"{key}: needs the student's layer shape to equal the teacher's; differs in "
                          + "; ".join(differ))


def teacher_layers(teacher: nn.Module, key: str) -> list[nn.Module]:
    """The teacher's transformer layers (BERT family), else a ConfigError."""
    base = getattr(teacher, "base_model", teacher)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    ok = layers is not None and all(
        all(_has(layer, path) for path in BERT_LAYER_PATHS.values()) for layer in layers
    )
    if not ok:
        raise ConfigError(f"{key}: can only copy layers from a BERT-family teacher (encoder.layer[*] with "
                          f"attention.self.query ... output.LayerNorm), not {type(teacher).__name__}")
    return list(layers)


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def layer_state(layer: nn.Module) -> dict[str, torch.Tensor]:
    """A BERT layer's parameters under our MiniAlbertLayer paths ("attention.query.weight", ...)."""
    out = {}
    for ours, theirs in BERT_LAYER_PATHS.items():
        module = layer.get_submodule(theirs)
        for name in ("weight", "bias"):
            out[f"{ours}.{name}"] = getattr(module, name).detach()
    return out


def unique_layer_sources(method: str, pattern: Sequence[int], layer_map: Sequence[int],
                         num_teacher: int) -> list[list[int]]:
    """For each unique layer j, the teacher layers whose mean initialises it (one for
    stepwise and lower; one per recursion applying j, repeats kept, for average)."""
    M = max(pattern) + 1
    uses = [[layer_map[i] for i, p in enumerate(pattern) if p == j] for j in range(M)]
    if method == "stepwise":
        return [u[:1] for u in uses]
    if method == "average":
        return uses
    if method == "lower":
        if M > num_teacher:
            raise ConfigError(f"init_from_teacher: lower: {M} unique layers but the teacher has {num_teacher}")
        return [[j] for j in range(M)]
    raise ConfigError(f"init_from_teacher: expected one of {', '.join(INIT_METHODS)}, got {method!r}")


@torch.no_grad()
def init_layers_from_teacher(student, teacher: nn.Module, *, method: str | None, layer_map: Sequence[int],
                             lora_init: str = "zeros") -> None:
    """Initialise a MiniALBERT's shared layers (`method`), LoRA deltas (`lora_init`) and
    relaxed norms and biases from a BERT-family teacher, in place. See the module docstring.
    The shapes must match: the caller checks with `check_compatible` (naming its config key)."""
    base = student.base_model
    config = student.config
    layers = teacher_layers(teacher, "init_from_teacher" if method else "lora_init")
    states = [layer_state(layer) for layer in layers]
    pattern = config.recursion_layers
    if method is not None:
        for shared, sources in zip(base.shared_layers, unique_layer_sources(method, pattern, layer_map, len(layers))):
            for name, param in shared.named_parameters():
                param.copy_(torch.stack([states[t][name] for t in sources]).float().mean(0).to(param.dtype))
    if base.relaxations is None:
        return
    for i, relaxation in enumerate(base.relaxations):
        state, shared = states[layer_map[i]], base.shared_layers[pattern[i]]
        for k, norm in (relaxation.norms or {}).items():
            norm.weight.copy_(state[f"{NORM_PATHS[k]}.weight"])
            norm.bias.copy_(state[f"{NORM_PATHS[k]}.bias"])
        for t, relaxed in (relaxation.linears or {}).items():
            path = TARGET_PATHS[t]
            if relaxed.bias is not None:
                relaxed.bias.copy_(state[f"{path}.bias"])
            if relaxed.lora_A is not None and lora_init == "svd":
                residual = state[f"{path}.weight"] - shared.get_submodule(path).weight
                B, A = svd_factors(residual, relaxed.lora_A.shape[0], relaxed.scale)
                relaxed.lora_B.copy_(B)
                relaxed.lora_A.copy_(A)


def svd_factors(residual: torch.Tensor, rank: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A), B (out x rank), A (rank x in), with scale * B A the best rank-`rank` approximation
    of `residual` (truncated SVD in float64, the singular values split evenly between B and A;
    ranks beyond min(out, in) get zero rows/columns)."""
    U, S, Vh = torch.linalg.svd(residual.double(), full_matrices=False)
    k = min(rank, S.numel())
    root = (S[:k] / scale).sqrt()
    B = torch.zeros(residual.shape[0], rank, dtype=torch.float64)
    A = torch.zeros(rank, residual.shape[1], dtype=torch.float64)
    B[:, :k] = U[:, :k] * root
    A[:k] = root[:, None] * Vh[:k]
    return B.to(residual.dtype), A.to(residual.dtype)


@torch.no_grad()
def copy_mlm_head(student, teacher: nn.Module) -> None:
    """The teacher's MLM head (BERT: transform dense -> act -> LayerNorm -> decoder) into the
    student's (vocab_transform -> GELU -> vocab_layer_norm -> vocab_projector)."""
    predictions = getattr(getattr(teacher, "cls", None), "predictions", None)
    if predictions is None:
        raise ConfigError(f"init_from_teacher: cannot copy the MLM head of {type(teacher).__name__} "
                          "(expected a BERT-family cls.predictions head)")
    pairs = ((student.vocab_transform, predictions.transform.dense),
             (student.vocab_layer_norm, predictions.transform.LayerNorm))
    for ours, theirs in pairs:
        ours.weight.copy_(theirs.weight)
        ours.bias.copy_(theirs.bias)
    student.vocab_projector.weight.copy_(predictions.decoder.weight)
    bias = predictions.decoder.bias if predictions.decoder.bias is not None else predictions.bias
    student.vocab_projector.bias.copy_(bias)
