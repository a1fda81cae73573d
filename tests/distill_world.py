"""A tiny offline world for the distillation/training tests: tokenizer, windows, teacher, configs.

(No tests here; the other test_distill*/test_training* modules import these builders.)
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

WORDS = ("the cat dog sat on mat ran far away a big small red blue green house tree bird sang loud "
         "soft quick slow fox jumped over lazy river flows down hill sun shines bright moon glows").split()


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one intra-op thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tokenizer(dst: Path):
    from transformers import BertTokenizerFast

    dst.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # `vocab=`, not `vocab_file=`: transformers 5 ignores the file there and keeps the 5 special tokens
    tok = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    assert len(tok) == len(vocab)
    tok.save_pretrained(dst)
    return tok


def make_windows(dst: Path, tokenizer, n: int = 48, seed: int = 0, max_len: int = 24) -> Path:
    from datasets import Dataset

    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, max_len - 2))) for _ in range(n)]
    enc = tokenizer(texts, return_special_tokens_mask=True, truncation=True, max_length=max_len)
    Dataset.from_dict({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                           "special_tokens_mask")}).save_to_disk(str(dst))
    return dst


def make_teacher(dst: Path, tokenizer, hidden: int = 32, layers: int = 4, heads: int = 2, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                                       num_attention_heads=heads, intermediate_size=2 * hidden,
                                       max_position_embeddings=64, pad_token_id=0,
                                       initializer_range=0.2))  # peaked attention: a visible ATT term
    model.save_pretrained(dst)
    tokenizer.save_pretrained(dst)
    return model


def make_world(root: Path) -> dict[str, Path]:
    """tokenizer/, windows/, teacher/ under root (built once per test session by the callers)."""
    if (root / "teacher" / "config.json").exists():
        return {"root": root, "tokenizer": root / "tokenizer", "windows": root / "windows", "teacher": root / "teacher"}
    tok = make_tokenizer(root / "tokenizer")
    make_windows(root / "windows", tok)
    make_teacher(root / "teacher", tok)
    return {"root": root, "tokenizer": root / "tokenizer", "windows": root / "windows", "teacher": root / "teacher"}


def distill_config(world: dict[str, Path], path: Path, **training) -> Path:
    cfg = {
        "teacher": str(world["teacher"]),
        "windows": str(world["windows"]),
        "student": {"num_recursions": 2, "embedding_size": 16, "use_adapter": True, "reduction_factor": 4,
                    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        "loss": {"layer_map": None, "weights": {"mlm": 1, "attention": 3, "hidden": 3, "output": 5, "embedding": 0},
                 "temperature": 1.0},
        "training": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.01, "batch_size": 8, "max_steps": 6, "seed": 0, "log_interval": 2,
                     "checkpoint_interval": 3, **training},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path
