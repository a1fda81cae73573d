"""An independent, functional re-statement of the authors' MiniALBERT forward pass, written
straight from REFERENCE sections 1-2 over a state dict in THEIR key layout, and a writer of
random checkpoints in that layout. Tests use it to check the importer on any configuration
(sizes, adapters, E == H, activations, file formats), beyond the one fixture their code wrote.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

LAYER = "albert.albert.encoder.albert_layer_groups.0.albert_layers.0."


def random_authors_checkpoint(
    path: Path,
    *,
    vocab=64,
    E=16,
    H=32,
    heads=4,
    ffn=48,
    recursions=2,
    adapters=True,
    r=4,
    act="gelu",
    model_type="albert",
    fmt="safetensors",
    max_pos=40,
    seed=0,
) -> dict[str, torch.Tensor]:
    """Write a random checkpoint in the authors' layout to `path`; return its state dict."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    s: dict[str, torch.Tensor] = {}
    emb = "albert.albert.embeddings."
    s[emb + "word_embeddings.weight"] = rnd(vocab, E)
    s[emb + "position_embeddings.weight"] = rnd(max_pos, E)
    s[emb + "token_type_embeddings.weight"] = rnd(2, E)
    s[emb + "LayerNorm.weight"] = 1 + rnd(E)
    s[emb + "LayerNorm.bias"] = rnd(E)
    for name in ("query", "key", "value", "dense"):
        s[LAYER + f"attention.{name}.weight"] = rnd(H, H)
        s[LAYER + f"attention.{name}.bias"] = rnd(H)
    s[LAYER + "attention.LayerNorm.weight"] = 1 + rnd(H)
    s[LAYER + "attention.LayerNorm.bias"] = rnd(H)
    s[LAYER + "ffn.weight"], s[LAYER + "ffn.bias"] = rnd(ffn, H), rnd(ffn)
    s[LAYER + "ffn_output.weight"], s[LAYER + "ffn_output.bias"] = rnd(H, ffn), rnd(H)
    s[LAYER + "full_layer_layer_norm.weight"], s[LAYER + "full_layer_layer_norm.bias"] = 1 + rnd(H), rnd(H)
    s["albert.albert.pooler.weight"], s["albert.albert.pooler.bias"] = rnd(H, H), rnd(H)
    if E != H:
        s["albert.projector.weight"], s["albert.projector.bias"] = rnd(H, E), rnd(H)
    if adapters:
        for kind in ("att_adapters", "mlp_adapters"):
            for i in range(recursions):
                p = f"albert.{kind}.{i}."
                s[p + "block.0.weight"], s[p + "block.0.bias"] = rnd(H // r, H), rnd(H // r)
                s[p + "block.2.weight"], s[p + "block.2.bias"] = rnd(H, H // r), rnd(H)
                s[p + "norm.weight"], s[p + "norm.bias"] = 1 + rnd(H), rnd(H)
    s["vocab_transform.weight"], s["vocab_transform.bias"] = rnd(H, H), rnd(H)
    s["vocab_layer_norm.weight"], s["vocab_layer_norm.bias"] = 1 + rnd(H), rnd(H)
    s["vocab_projector.weight"], s["vocab_projector.bias"] = rnd(vocab, H), rnd(vocab)

    config = {
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": H,
        "num_hidden_layers": recursions,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "hidden_act": act,
        "max_position_embeddings": max_pos,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "use_adapter": adapters,
        "reduction_factor": r,
        "architectures": ["MiniAlbertForMaskedLM"],
    }
    if model_type == "albert":  # their "bert"-typed configs omit it (E == H there)
        config["embedding_size"] = E
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(s, str(path / "model.safetensors"))
    else:
        torch.save(s, path / "pytorch_model.bin")
    return s


def authors_forward(s: dict[str, torch.Tensor], config: dict, input_ids, attention_mask, token_type_ids):
    """Eval-mode forward of the authors' model from their state dict: (logits, hidden states, attentions)."""
    H, nh, N = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    eps = config.get("layer_norm_eps", 1e-12)
    act = ACT2FN[config["hidden_act"]]
    B, T = input_ids.shape

    def lin(x, p):
        return F.linear(x, s[p + ".weight"], s[p + ".bias"])

    def ln(x, p):
        return F.layer_norm(x, (x.shape[-1],), s[p + ".weight"], s[p + ".bias"], eps)

    emb = "albert.albert.embeddings."
    x = (
        s[emb + "word_embeddings.weight"][input_ids]
        + s[emb + "position_embeddings.weight"][torch.arange(T)][None]
        + s[emb + "token_type_embeddings.weight"][token_type_ids]
    )
    h = ln(x, emb + "LayerNorm")
    if "albert.projector.weight" in s:
        h = lin(h, "albert.projector")
    mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    hidden, attentions = [h], []

    def adapter(x, p):
        return ln(x + lin(F.gelu(lin(x, p + ".block.0")), p + ".block.2"), p + ".norm")

    for i in range(N):
        if config.get("use_adapter"):
            h = adapter(h, f"albert.att_adapters.{i}")

        def heads(t):
            return t.view(B, T, nh, H // nh).transpose(1, 2)

        q, k, v = (heads(lin(h, LAYER + f"attention.{n}")) for n in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(H // nh) + mask, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, T, H)
        h = ln(h + lin(ctx, LAYER + "attention.dense"), LAYER + "attention.LayerNorm")
        if config.get("use_adapter"):
            h = adapter(h, f"albert.mlp_adapters.{i}")
        h = ln(h + lin(act(lin(h, LAYER + "ffn")), LAYER + "ffn_output"), LAYER + "full_layer_layer_norm")
        hidden.append(h)
        attentions.append(probs)
    x = ln(F.gelu(lin(h, "vocab_transform")), "vocab_layer_norm")
    return lin(x, "vocab_projector"), hidden, attentions
