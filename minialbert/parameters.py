"""Borrowed embeddings: start a MiniALBERT from a pretrained BERT-style model's embeddings.

Adapter tuning and parameter counts live in `minialbert.adapters`; they are re-exported here
so that `from minialbert.parameters import count_parameters` keeps working.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from .adapters import count_parameters, prepare_for_adapter_tuning  # noqa: F401  (re-exported)
from .modeling import MiniAlbertModel, MiniAlbertPreTrainedModel


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
