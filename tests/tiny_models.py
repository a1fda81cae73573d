"""A tiny MiniALBERT shape and a padded batch, shared by the model and adapter tests."""

from __future__ import annotations

import torch

from minialbert import MiniAlbertConfig

TINY = dict(vocab_size=50, embedding_size=12, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=32, reduction_factor=4)


def tiny_config(**overrides):
    return MiniAlbertConfig(**{**TINY, **overrides})


def batch(B=3, T=9, vocab=50, seed=0):
    """Random ids with two rows padded (at 6 and at 2)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return dict(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
