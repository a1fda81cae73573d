"""Import checkpoints saved by the MiniALBERT authors' code (REFERENCE section 2).

Their layout: an ALBERT-style config.json with `use_adapter` / `reduction_factor`, and weights
under `albert.albert.*` (embeddings, one shared layer, an unused pooler), `albert.projector.*`,
`albert.att_adapters.{i}.*`, `albert.mlp_adapters.{i}.*` and the MLM head `vocab_*`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from .modeling import MiniAlbertConfig
from .utils import ConfigError, atomic_directory, read_json

_LAYER = "albert.albert.encoder.albert_layer_groups.0.albert_layers.0."

# Authors' key (regex) -> our key (template). Order does not matter: patterns are disjoint.
_KEY_MAP: list[tuple[str, str]] = [
    (r"albert\.albert\.embeddings\.(.+)", r"minialbert.embeddings.\1"),
    (re.escape(_LAYER) + r"attention\.(.+)", r"minialbert.layer.attention.\1"),
    (re.escape(_LAYER) + r"(ffn|ffn_output|full_layer_layer_norm)\.(.+)", r"minialbert.layer.feed_forward.\1.\2"),
    (r"albert\.projector\.(.+)", r"minialbert.projector.\1"),
    (r"albert\.att_adapters\.(\d+)\.block\.0\.(.+)", r"minialbert.att_adapters.\1.down.\2"),
    (r"albert\.att_adapters\.(\d+)\.block\.2\.(.+)", r"minialbert.att_adapters.\1.up.\2"),
    (r"albert\.att_adapters\.(\d+)\.norm\.(.+)", r"minialbert.att_adapters.\1.norm.\2"),
    (r"albert\.mlp_adapters\.(\d+)\.block\.0\.(.+)", r"minialbert.ffn_adapters.\1.down.\2"),
    (r"albert\.mlp_adapters\.(\d+)\.block\.2\.(.+)", r"minialbert.ffn_adapters.\1.up.\2"),
    (r"albert\.mlp_adapters\.(\d+)\.norm\.(.+)", r"minialbert.ffn_adapters.\1.norm.\2"),
    (r"(vocab_transform|vocab_layer_norm|vocab_projector)\.(.+)", r"\1.\2"),
]
# Present in their checkpoints but never used by their forward pass (or not a weight at all).
_IGNORED = re.compile(r"albert\.albert\.pooler\..+|albert\.albert\.embeddings\.position_ids")

_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "initializer_range",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "spiece.model",
    "added_tokens.json",
)


def _load_state_dict(src: Path) -> dict[str, torch.Tensor]:
    if (src / "model.safetensors").exists():
        from safetensors.torch import load_file

        try:
            return load_file(src / "model.safetensors")
        except Exception as e:  # safetensors raises several types for a damaged file
            raise ConfigError(f"{src / 'model.safetensors'}: cannot read safetensors weights ({e})") from None
    if (src / "pytorch_model.bin").exists():
        try:
            # weights_only: a pickled checkpoint must not be able to run code on load.
            state = torch.load(src / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise ConfigError(f"{src / 'pytorch_model.bin'}: cannot load with weights_only=True ({e})") from None
        if not isinstance(state, dict):
            raise ConfigError(f"{src / 'pytorch_model.bin'}: expected a state dict, got {type(state).__name__}")
        return state
    raise ConfigError(f"{src}: no model.safetensors or pytorch_model.bin found")


def _convert_config(src_cfg: dict, state: dict[str, torch.Tensor], path: Path) -> MiniAlbertConfig:
    if src_cfg.get("model_type") not in ("albert", "bert"):
        raise ConfigError(
            f"{path}: field 'model_type' is {src_cfg.get('model_type')!r}; expected 'albert' or 'bert' "
            "(the authors' MiniALBERT layout)"
        )
    word = state.get("albert.albert.embeddings.word_embeddings.weight")
    if word is None:
        raise ConfigError(f"{path.parent}: missing key 'albert.albert.embeddings.word_embeddings.weight'")
    # Configs saved as "bert" carry no embedding_size: the embedding matrix tells it.
    embedding_size = int(src_cfg.get("embedding_size", word.shape[1]))
    kwargs = {k: src_cfg[k] for k in _CONFIG_FIELDS if k in src_cfg}
    kwargs["embedding_size"] = embedding_size
    kwargs["use_adapter"] = bool(src_cfg.get("use_adapter", False))
    if "reduction_factor" in src_cfg:
        kwargs["reduction_factor"] = int(src_cfg["reduction_factor"])
    if "classifier_dropout_prob" in src_cfg:
        kwargs["classifier_dropout_prob"] = src_cfg["classifier_dropout_prob"]
    try:
        return MiniAlbertConfig(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _rename(key: str) -> str | None:
    for pattern, template in _KEY_MAP:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, template, key)
    return None


def convert_state_dict(state: dict[str, torch.Tensor], config: MiniAlbertConfig, where: str = "checkpoint"):
    """Map the authors' keys onto a fresh MiniAlbertForMaskedLM (or MiniAlbertModel when the
    checkpoint has no MLM head) and return the loaded model.

    Refuses a missing key, an unexpected key (other than the unused pooler) or a shape
    mismatch with a ConfigError naming the key and the shapes.
    """
    from .modeling import MiniAlbertForMaskedLM, MiniAlbertModel

    has_head = any(k.startswith("vocab_") for k in state)
    model = MiniAlbertForMaskedLM(config) if has_head else MiniAlbertModel(config)
    prefix_strip = "" if has_head else "minialbert."
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if _IGNORED.fullmatch(key):
            continue
        ours = _rename(key)
        if ours is None:
            raise ConfigError(f"{where}: unexpected key {key!r} (not part of the MiniALBERT layout)")
        ours = ours[len(prefix_strip):] if ours.startswith(prefix_strip) else ours
        if ours not in expected:
            raise ConfigError(
                f"{where}: unexpected key {key!r} (maps to {ours!r}, which this config does not have; "
                f"use_adapter={config.use_adapter}, num_hidden_layers={config.num_hidden_layers}, "
                f"embedding_size={config.embedding_size}, hidden_size={config.hidden_size})"
            )
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise ConfigError(
                f"{where}: key {key!r} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(expected[ours].shape)}"
            )
        converted[ours] = tensor.to(expected[ours].dtype)
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ConfigError(f"{where}: missing key(s) for {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    model.load_state_dict(converted, strict=True)
    return model


def _resolve_source(src: str | os.PathLike) -> Path:
    path = Path(src)
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{path}: expected a checkpoint directory, got a file")
    if str(src).count("/") == 1 and not str(src).startswith((".", "/")):
        # A hub name such as nlpie/miniALBERT-128: download the snapshot (needs network).
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(src), allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt", "*.model"]))
    raise ConfigError(f"{path}: checkpoint directory not found")


def import_authors_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Convert the authors' checkpoint at `src` (a dir or a hub name) into a minialbert model
    dir at `dst` (safetensors, plus any tokenizer files found beside the weights).

    `dst` is written atomically: on any error it is left as it was.
    """
    src_dir = _resolve_source(src)
    config_path = src_dir / "config.json"
    src_cfg = read_json(config_path, "config")
    if not isinstance(src_cfg, dict):
        raise ConfigError(f"{config_path}: expected a JSON object")
    state = _load_state_dict(src_dir)
    config = _convert_config(src_cfg, state, config_path)
    model = convert_state_dict(state, config, where=str(src_dir))
    with atomic_directory(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in _TOKENIZER_FILES:
            if (src_dir / name).exists():
                shutil.copy2(src_dir / name, tmp / name)
    return Path(dst)
