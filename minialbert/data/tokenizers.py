"""Tokenizers: load one (hub name or local dir) or train a WordPiece one on a corpus.

A trained tokenizer is saved as a fast BERT tokenizer dir (`save_pretrained`), loadable with
`AutoTokenizer.from_pretrained`, with the BERT special tokens [PAD]=0, [UNK]=1, [CLS]=2,
[SEP]=3, [MASK]=4, so that the windows, the teacher and every student agree on the ids.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterable, Iterator

from minialbert.utils import ConfigError, atomic_directory, write_json_atomic

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def load_tokenizer(name_or_path: str | Path):
    """A fast tokenizer from a local dir or a hub name; a ConfigError names what failed."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as e:
        where = "local directory" if Path(name_or_path).exists() else "hub name or local directory"
        raise ConfigError(f"{name_or_path}: cannot load a tokenizer from this {where} ({e})") from None
    if not tokenizer.is_fast:
        # windowing relies on the fast tokenizer's batched Rust implementation
        raise ConfigError(f"{name_or_path}: expected a fast tokenizer (tokenizer.json), got {type(tokenizer).__name__}")
    return tokenizer


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_wordpiece(texts: Iterable[str], vocab_size: int = 30522, lowercase: bool = True, min_frequency: int = 2):
    """Train a BERT-style WordPiece tokenizer on `texts` (read twice: pass a re-iterable, such as
    a list or a corpus column, to keep a large corpus out of memory) and return it as a fast BERT
    tokenizer; the same texts give the same vocabulary, ids included, in any process."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS):
        raise ConfigError(f"vocab_size must be larger than the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    if iter(texts) is texts:  # a one-shot iterator: kept, for the second pass below
        texts = list(texts)

    def train(reserved: list[str]):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        # The same normaliser/pre-tokeniser as BERT, so the vocabulary fits BertTokenizerFast's pipeline.
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase, clean_text=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[*SPECIAL_TOKENS, *reserved],
            continuing_subword_prefix="##", show_progress=False,
        )
        tok.train_from_iterator(_batches(texts), trainer=trainer)
        return tok.get_vocab()

    # The trainer numbers the continuing-subword characters ("##e") in hash-map order, which
    # changes from process to process, and breaks ties between merges of equal count by those
    # numbers: the same corpus gave different vocabularies (huggingface/tokenizers#1794). So a
    # first pass finds them, and the second numbers them in sorted order, before any merge.
    first = train([])
    continuing = sorted(t for t in first if t.startswith("##") and len(t) == 3)
    vocab = train(continuing)
    if len(vocab) <= len(SPECIAL_TOKENS):
        raise ConfigError("tokenizer training: the corpus produced no vocabulary (is it empty?)")
    # Rebuilding from the vocabulary gives a standard BERT tokenizer (post-processor with
    # [CLS]/[SEP], token_type_ids, do_lower_case recorded in the config).
    return BertTokenizerFast(vocab=vocab, do_lower_case=lowercase, strip_accents=lowercase if lowercase else None)


class CorpusText:
    """The `text` column of a corpus dataset, iterable as often as needed, row by row."""

    def __init__(self, corpus):
        self.corpus = corpus

    def __iter__(self) -> Iterator[str]:
        return (row["text"] for row in self.corpus)


def train_tokenizer(corpus_dir: str | Path, output: str | Path, vocab_size: int = 30522, lowercase: bool = True,
                    min_frequency: int = 2, model_max_length: int = 512):
    """Train a WordPiece tokenizer on a corpus dir (column `text`) and save it atomically to `output`."""
    from minialbert.data.corpora import load_corpus

    corpus = load_corpus(corpus_dir)
    tokenizer = train_wordpiece(CorpusText(corpus), vocab_size, lowercase, min_frequency)
    tokenizer.model_max_length = model_max_length
    with atomic_directory(output) as tmp:
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "training_args.json", {
            "corpus": str(corpus_dir), "vocab_size": vocab_size, "lowercase": lowercase,
            "min_frequency": min_frequency, "actual_vocab_size": len(tokenizer)})
    return tokenizer


# --- CLI: minialbert train-tokenizer ---------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from minialbert.command_configs import add_config_arguments
    from minialbert.command_configs import TokenizerConfig

    parser.add_argument("--corpus", required=True, help="corpus dir written by `minialbert ingest-corpus`")
    parser.add_argument("--output", required=True, help="tokenizer dir to write (fast BERT tokenizer)")
    add_config_arguments(parser, TokenizerConfig)
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency for a merge (default 2)")
    parser.add_argument("--model-max-length", type=int, default=512, help="recorded model_max_length (default 512)")


def run(args: argparse.Namespace) -> int:
    from minialbert.command_configs import config_from_args
    from minialbert.command_configs import TokenizerConfig

    s = config_from_args(TokenizerConfig, args)
    tokenizer = train_tokenizer(args.corpus, args.output, vocab_size=s.vocab_size, lowercase=s.lowercase,
                                min_frequency=args.min_frequency, model_max_length=args.model_max_length)
    print(f"wrote {args.output}: WordPiece vocabulary of {len(tokenizer)} tokens")
    return 0
