"""Windowing: cut every tokenised document into overlapping windows (REFERENCE section 4).

Definition (for a tokenizer that adds [CLS] ... [SEP] to one sequence, i.e. 2 special tokens):

* Each document is tokenised whole, without special tokens and without truncation: n tokens.
* A window holds C = max_length - 2 content tokens, wrapped as [CLS] content [SEP].
* `stride` is the number of content tokens two consecutive windows SHARE (the overlap), as in
  the `stride` argument of a Hugging Face tokenizer with `return_overflowing_tokens=True`,
  which is how the reference windows (max 256, stride 128) were made. Window j covers content
  tokens [j*(C - stride), j*(C - stride) + C), clipped to n; windows are added until one
  reaches the end of the document, so the last may be shorter and no window is contained in
  the previous one. Number of windows: 1 if n <= C, else 1 + ceil((n - C) / (C - stride)).
  (For max 256, stride 128: 254 content tokens per window, advancing by 126.)
* A document with more than `max_windows_per_document` (k) windows keeps k of them, drawn without
  replacement by a generator seeded with (seed, document index) and kept in document order.
  Seeding per document makes the result independent of `num_proc` and batch size.
* A document with no token (n = 0) gives no window.

Output: a datasets Arrow dir, one row per window, columns input_ids (int32),
attention_mask, token_type_ids, special_tokens_mask (int8), unpadded: collators pad.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from minialbert.utils import ConfigError, atomic_directory, config_hash, write_json_atomic

WINDOW_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "special_tokens_mask")


def window_spans(num_tokens: int, content_length: int, stride: int) -> list[tuple[int, int]]:
    """The [start, end) content-token spans of a document of `num_tokens` tokens."""
    step = content_length - stride
    return [(start, min(start + content_length, num_tokens))
            for start in range(0, max(num_tokens - stride, 1), step)] if num_tokens > 0 else []


def num_windows(num_tokens: int, content_length: int, stride: int) -> int:
    """Closed form of len(window_spans(...)), for documentation and tests."""
    if num_tokens <= 0:
        return 0
    if num_tokens <= content_length:
        return 1
    return 1 + math.ceil((num_tokens - content_length) / (content_length - stride))


def sample_windows(count: int, k: int | None, seed: int, doc_index: int) -> list[int]:
    """Indices of the windows kept for document `doc_index`: all if count <= k, else k sampled
    without replacement by a generator seeded with (seed, doc_index), in ascending order."""
    import numpy as np

    if k is None or count <= k:
        return list(range(count))
    rng = np.random.default_rng([seed, doc_index])
    return sorted(rng.choice(count, size=k, replace=False).tolist())


def check_window_args(tokenizer, max_length: int, stride: int, max_windows_per_document: int | None) -> int:
    """Validate the windowing arguments; returns the content length C."""
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ConfigError(f"{tokenizer.name_or_path}: tokenizer has no [CLS]/[SEP] tokens; windows need both")
    content = max_length - 2
    if content < 1:
        raise ConfigError(f"max_length must be at least 3 (two special tokens + content), got {max_length}")
    if not 0 <= stride < content:
        raise ConfigError(f"stride (the overlap of consecutive windows) must be in [0, max_length - 2 = {content}), "
                          f"got {stride}")
    if max_windows_per_document is not None and max_windows_per_document < 1:
        raise ConfigError(f"max_windows_per_document must be a positive integer or null, got {max_windows_per_document}")
    return content


def _window_batch(batch: dict, indices: list[int], tokenizer, content: int, stride: int, k: int | None,
                  seed: int) -> dict:
    """datasets.map function: a batch of documents -> the rows of their kept windows."""
    encoded = tokenizer(batch["text"], add_special_tokens=False, truncation=False, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out: dict[str, list] = {name: [] for name in WINDOW_COLUMNS}
    for ids, doc_index in zip(encoded, indices):
        spans = window_spans(len(ids), content, stride)
        for j in sample_windows(len(spans), k, seed, doc_index):
            start, end = spans[j]
            window = [cls, *ids[start:end], sep]
            out["input_ids"].append(window)
            out["attention_mask"].append([1] * len(window))
            out["token_type_ids"].append([0] * len(window))
            out["special_tokens_mask"].append([1] + [0] * (end - start) + [1])
    return out


def make_windows_dataset(corpus, tokenizer, max_length: int = 256, stride: int = 128,
                         max_windows_per_document: int | None = 10, seed: int = 42, num_proc: int | None = None,
                         cache_dir: str | None = None, batch_size: int = 256):
    """Window a corpus Dataset (column `text`) with a fast tokenizer; returns the windows Dataset.

    `cache_dir` receives the windows' Arrow files (default: none, the windows are kept in
    memory). Either way nothing is written next to the corpus, which belongs to another stage.
    """
    import datasets

    content = check_window_args(tokenizer, max_length, stride, max_windows_per_document)
    if "text" not in corpus.column_names:
        raise ConfigError(f"corpus: expected a `text` column, found {', '.join(corpus.column_names)}")
    features = datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")),
        **{name: datasets.List(datasets.Value("int8")) for name in WINDOW_COLUMNS[1:]},
    })
    params = {"max_length": max_length, "stride": stride, "k": max_windows_per_document, "seed": seed,
              "corpus": corpus._fingerprint, "vocab": config_hash(sorted(tokenizer.get_vocab().items()))}
    # With a cache dir, the windows stream to Arrow files there (the corpus may not fit in
    # memory); without one they stay in memory, which suits tests and benchmarks.
    cache = {"cache_file_name": str(Path(cache_dir) / "windows.arrow")} if cache_dir else {"keep_in_memory": True}
    return corpus.map(
        _window_batch, batched=True, batch_size=batch_size, with_indices=True, num_proc=num_proc,
        remove_columns=corpus.column_names, features=features,
        fn_kwargs={"tokenizer": tokenizer, "content": content, "stride": stride, "k": max_windows_per_document,
                   "seed": seed},
        # an explicit fingerprint: hashing the tokenizer object is slow and not stable
        new_fingerprint=config_hash(params), **cache,
        desc="windowing",
    )


def make_windows(corpus_dir: str | Path, tokenizer_dir: str | Path, output: str | Path, max_length: int = 256,
                 stride: int = 128, max_windows_per_document: int | None = 10, seed: int = 42,
                 num_proc: int | None = None):
    """Window a corpus dir with a tokenizer (dir or hub name) and write the windows dir atomically.

    Also writes `windowing.json` (the arguments and counts) into the windows dir.
    """
    from minialbert.data.corpora import load_corpus
    from minialbert.data.tokenizers import load_tokenizer

    corpus = load_corpus(corpus_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    with tempfile.TemporaryDirectory(prefix="minialbert-windows-") as cache_dir:
        windows = make_windows_dataset(corpus, tokenizer, max_length, stride, max_windows_per_document, seed, num_proc,
                                       cache_dir=cache_dir)
        if len(windows) == 0:
            raise ConfigError(f"{corpus_dir}: windowing produced no window (every document tokenised to nothing)")
        with atomic_directory(output) as tmp:
            windows.save_to_disk(str(tmp))
            write_json_atomic(tmp / "windowing.json", {
                "corpus": str(corpus_dir), "tokenizer": str(tokenizer_dir), "max_length": max_length,
                "stride": stride, "max_windows_per_document": max_windows_per_document, "seed": seed,
                "documents": len(corpus), "windows": len(windows)})
    import datasets

    return datasets.load_from_disk(str(output))


# --- CLI: minialbert make-windows ------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from minialbert.command_configs import add_config_arguments
    from minialbert.command_configs import WindowsConfig

    parser.description = ("Cut every corpus document into windows of --max-length tokens ([CLS] ... [SEP] each), "
                          "consecutive windows sharing --stride content tokens; keep at most "
                          "--max-windows-per-document windows per document (null: all), sampled with --seed.")
    parser.add_argument("--corpus", required=True, help="corpus dir (from `minialbert ingest-corpus`)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer dir or hub name (a fast tokenizer)")
    parser.add_argument("--output", required=True, help="windows dir to write (replaced atomically)")
    add_config_arguments(parser, WindowsConfig)


def run(args: argparse.Namespace) -> int:
    from minialbert.command_configs import config_from_args
    from minialbert.command_configs import WindowsConfig

    s = config_from_args(WindowsConfig, args)
    windows = make_windows(args.corpus, args.tokenizer, args.output, s.max_length, s.stride,
                           s.max_windows_per_document, s.seed, s.num_proc)
    print(f"wrote {args.output}: {len(windows)} windows")
    return 0
