"""Building a MiniALBERT student: its config derived from the `student:` section, its layers,
embeddings and MLM head optionally taken from the teacher or another model.

- `student_model_config(spec, teacher_config)`: the MiniAlbertConfig of a `StudentConfig`. Every
  field of the section that is a model setting names its MiniAlbertConfig attribute in its
  declaration (`option(model=...)`, default: the same name), so a new student setting is a
  field in `minialbert.command_configs` and its use in the model; nulls marked `teacher_default` take
  the teacher's value.
- `build_student(spec, teacher, layer_map, seed=...)`: the MiniAlbertForMaskedLM distillation
  starts from (`layer_map` already checked: `minialbert.recursions.check_layer_map`).

Starting from the teacher (Bae et al. 2025, "Relaxed Recursive Transformers"): recursion i of
the student corresponds to teacher layer `layer_map[i]` (the distillation's layer map);
recursion i applies unique layer `pattern[i]` (`MiniAlbertConfig.recursion_layers`).

- `init_from_teacher` copies teacher layers into the M shared layers:
  - `stepwise`: unique layer j <- the teacher layer of the first recursion that applies j;
  - `average`:  unique layer j <- the element-wise mean of the teacher layers of all the
                recursions that apply j (LayerNorm parameters included);
  - `lower`:    unique layer j <- teacher layer j.
  The embeddings and the MLM head are copied too.
- `lora_init: svd` starts recursion i's LoRA delta at the best rank-r approximation of the
  residual W_teacher[layer_map[i]] - W_shared[pattern[i]] (truncated SVD), so B A reproduces
  what sharing lost as far as rank r allows; rank = H makes every recursion its teacher layer.
- The recursions' own LayerNorms and biases (relaxed) start from their teacher layer.
- `init_embeddings_from(model, source)`: the embeddings of a pretrained BERT-style model.

Only BERT-family teachers (`encoder.layer[*]` of BertLayer shape) can seed layers; the shapes
must match: `check_compatible` names every field that differs.
"""

from __future__ import annotations

import copy
import os
from typing import Sequence

import torch
from torch import nn

from minialbert.blocks import NORM_PATHS, TARGET_PATHS
from minialbert.command_configs import (
    StudentConfig,
    check_compatible,
    student_model_settings,
    teacher_layers_key,
)
from minialbert.modeling import MiniAlbertConfig, MiniAlbertForMaskedLM, MiniAlbertModel, MiniAlbertPreTrainedModel
from minialbert.utils import ConfigError, set_seed


# --------------------------------------------------------------------------------------------
# The student's config and the model
# --------------------------------------------------------------------------------------------
def student_model_config(spec: StudentConfig, teacher_config) -> MiniAlbertConfig:
    """The MiniAlbertConfig of the `student:` section: its model settings (declared in
    `StudentConfig`) with nulls resolved from the teacher (`student_model_settings`, which the
    workflow's plan checks too), and the vocabulary, positions, token types and padding id of the
    teacher. ConfigError names the key."""
    tc = teacher_config
    copy_embeddings = spec.init_from_teacher is not None and not spec.embeddings_from
    svd = bool(spec.relaxation.lora_rank) and spec.relaxation.lora_init == "svd"
    settings = student_model_settings(spec, tc)
    try:
        return MiniAlbertConfig(
            **settings,
            vocab_size=tc.vocab_size,
            max_position_embeddings=tc.max_position_embeddings,
            type_vocab_size=getattr(tc, "type_vocab_size", 2),
            layer_norm_eps=getattr(tc, "layer_norm_eps", 1e-12) if copy_embeddings or svd else 1e-12,
            pad_token_id=getattr(tc, "pad_token_id", 0) or 0,
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"student: {e}") from None


def resolved_sizes(config: MiniAlbertConfig) -> dict[str, int]:
    """The sizes a student section's nulls resolved to (recorded beside the config in metrics.json)."""
    return {name: getattr(config, name) for name in
            ("hidden_size", "num_attention_heads", "intermediate_size", "embedding_size")}


def build_student(spec: StudentConfig, teacher, layer_map: Sequence[int], *, seed: int,
                  config: MiniAlbertConfig | None = None) -> MiniAlbertForMaskedLM:
    """A new MiniAlbertForMaskedLM for the student section, initialised with `seed`; with
    `init_from_teacher` (or SVD-initialised LoRA) its layers, embeddings and MLM head come from
    the teacher. `layer_map`: the teacher layer of each recursion, already checked;
    `config`: `student_model_config(spec, teacher.config)` when the caller has it."""
    config = config or student_model_config(spec, teacher.config)
    from_teacher = teacher_layers_key(spec) is not None
    if from_teacher:
        check_compatible(config, teacher.config, teacher_layers_key(spec))
    set_seed(seed)
    model = MiniAlbertForMaskedLM(config)
    if from_teacher:
        init_layers_from_teacher(model, teacher, method=spec.init_from_teacher, layer_map=layer_map,
                                 lora_init=spec.relaxation.lora_init)
    if spec.init_from_teacher:
        # start as close to the teacher as the architecture allows: adapters add nothing yet
        for adapter in (*(model.minialbert.att_adapters or ()), *(model.minialbert.ffn_adapters or ())):
            adapter.init_near_identity(config.initializer_range)
        copy_mlm_head(model, teacher)
    copy_embeddings = spec.init_from_teacher is not None and not spec.embeddings_from
    source = spec.embeddings_from or (teacher if copy_embeddings else None)
    if source is not None:
        try:
            init_embeddings_from(model, source)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"student.embeddings_from: {e}") from None
    return model


# --------------------------------------------------------------------------------------------
# Layers from the teacher
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Embeddings from another model
# --------------------------------------------------------------------------------------------
def _base_model(model: nn.Module) -> MiniAlbertModel:
    if isinstance(model, MiniAlbertModel):
        return model
    base = getattr(model, "minialbert", None)
    if not isinstance(base, MiniAlbertModel):
        raise TypeError(f"expected a MiniALBERT model, got {type(model).__name__}")
    return base


def _embeddings_of(source: nn.Module) -> nn.Module:
    """Find a BERT-style embeddings module (word/position/token-type embeddings + LayerNorm)."""
    for module in source.modules():
        if all(hasattr(module, a) for a in ("word_embeddings", "position_embeddings", "LayerNorm")):
            return module
    raise ValueError(f"{type(source).__name__} has no BERT-style embeddings module")


@torch.no_grad()
def init_embeddings_from(model: MiniAlbertPreTrainedModel, source: nn.Module | str | os.PathLike):
    """Replace a MiniALBERT's embeddings with a copy of a pretrained BERT-style model's.

    `source` is a model, a local model dir, or a hub name (e.g. the authors'
    `huawei-noah/TinyBERT_General_4L_312D`, whose 312-d embeddings their general student
    starts from). The student's embedding size E becomes the source's width; the E -> H
    projector is rebuilt (freshly initialised) or removed when E == H. The vocabulary
    sizes must match. Returns the model, changed in place.
    """
    if not isinstance(source, nn.Module):
        from transformers import AutoModel

        source = AutoModel.from_pretrained(source)
    src = _embeddings_of(source)
    base = _base_model(model)
    config = model.config
    vocab, width = src.word_embeddings.weight.shape
    if vocab != config.vocab_size:
        raise ValueError(
            f"cannot take embeddings from {type(source).__name__}: its vocabulary has {vocab} tokens, "
            f"the student's config.vocab_size is {config.vocab_size}"
        )
    new = copy.deepcopy(base.embeddings)
    new.word_embeddings = copy.deepcopy(src.word_embeddings)
    new.position_embeddings = copy.deepcopy(src.position_embeddings)
    new.LayerNorm = copy.deepcopy(src.LayerNorm)
    if getattr(src, "token_type_embeddings", None) is not None:
        new.token_type_embeddings = copy.deepcopy(src.token_type_embeddings)
    else:  # e.g. DistilBERT: no segment embeddings; zeros keep the copied embedding unchanged
        new.token_type_embeddings = nn.Embedding(config.type_vocab_size, width).to(src.word_embeddings.weight)
        nn.init.zeros_(new.token_type_embeddings.weight)
    base.embeddings = new
    ref = next(base.embeddings.parameters())
    base.embeddings.to(ref.device, ref.dtype)
    if width != config.embedding_size or (base.projector is None) != (width == config.hidden_size):
        base.projector = None
        if width != config.hidden_size:
            base.projector = nn.Linear(width, config.hidden_size).to(ref.device, ref.dtype)
            nn.init.normal_(base.projector.weight, std=config.initializer_range)
            nn.init.zeros_(base.projector.bias)
    config.embedding_size = width
    config.max_position_embeddings = src.position_embeddings.num_embeddings
    config.type_vocab_size = new.token_type_embeddings.num_embeddings
    return model
