"""Windowing (REFERENCE section 4) and tokenizer training."""

from __future__ import annotations

import json

import pytest

from minialbert.data.tokenizers import SPECIAL_TOKENS, load_tokenizer, train_tokenizer, train_wordpiece
from minialbert.data.windows import (make_windows, make_windows_dataset, num_windows, sample_windows,
                                     window_spans)
from minialbert.utils import ConfigError

WORDS = [f"w{i}" for i in range(40)]


@pytest.fixture(scope="module")
def tokenizer():
    # every word w0..w39 becomes one token, so a document of n words is n tokens
    return train_wordpiece([" ".join(WORDS)] * 3, vocab_size=200, min_frequency=1)


def corpus_of(lengths):
    import datasets

    return datasets.Dataset.from_dict({"text": [" ".join(WORDS[i % 40] for i in range(n)) for n in lengths]})


@pytest.mark.parametrize("n, content, stride, expected", [
    (0, 4, 2, []),
    (3, 4, 2, [(0, 3)]),
    (4, 4, 2, [(0, 4)]),
    (5, 4, 2, [(0, 4), (2, 5)]),
    (10, 4, 2, [(0, 4), (2, 6), (4, 8), (6, 10)]),
    (10, 4, 0, [(0, 4), (4, 8), (8, 10)]),
    (600, 254, 128, [(0, 254), (126, 380), (252, 506), (378, 600)]),
])
def test_window_spans(n, content, stride, expected):
    assert window_spans(n, content, stride) == expected
    assert num_windows(n, content, stride) == len(expected)


def test_spans_match_hugging_face_overflow_semantics(tokenizer):
    # the reference windows were made with the tokenizer's `stride` (= overlap); ours must agree
    text = " ".join(WORDS[:37])
    hf = tokenizer(text, max_length=12, stride=4, truncation=True, return_overflowing_tokens=True)["input_ids"]
    ours = make_windows_dataset(corpus_of([37]), tokenizer, max_length=12, stride=4, max_windows_per_document=None)
    assert ours["input_ids"] == hf


def test_windows_content_special_tokens_and_overlap(tokenizer):
    ds = make_windows_dataset(corpus_of([30]), tokenizer, max_length=10, stride=3, max_windows_per_document=None)
    assert ds.column_names == ["input_ids", "attention_mask", "token_type_ids", "special_tokens_mask"]
    assert len(ds) == num_windows(30, 8, 3) == 6
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    content = []
    for row in ds:
        ids = row["input_ids"]
        assert ids[0] == cls and ids[-1] == sep and len(ids) <= 10
        assert row["special_tokens_mask"] == [1] + [0] * (len(ids) - 2) + [1]
        assert row["attention_mask"] == [1] * len(ids) and row["token_type_ids"] == [0] * len(ids)
        content.append(ids[1:-1])
    for prev, nxt in zip(content, content[1:]):
        assert prev[-3:] == nxt[:3]  # consecutive windows share `stride` tokens
    words = tokenizer.convert_ids_to_tokens(content[0] + [t for c in content[1:] for t in c[3:]])
    assert words == [WORDS[i % 40] for i in range(30)]  # every token covered, in order


def test_k_sampling_deterministic_and_independent_of_num_proc(tokenizer):
    corpus = corpus_of([5, 60, 90, 7, 75])
    kwargs = {"max_length": 8, "stride": 2, "max_windows_per_document": 3, "seed": 42}
    one = make_windows_dataset(corpus, tokenizer, num_proc=None, batch_size=2, **kwargs)
    two = make_windows_dataset(corpus, tokenizer, num_proc=2, batch_size=3, **kwargs)
    assert one["input_ids"] == two["input_ids"]
    assert len(one) == 1 + 3 + 3 + 2 + 3  # short documents keep all their windows
    other_seed = make_windows_dataset(corpus, tokenizer, **{**kwargs, "seed": 7})
    assert other_seed["input_ids"] != one["input_ids"]
    assert sample_windows(10, 3, 42, 1) == sample_windows(10, 3, 42, 1)
    assert sorted(sample_windows(10, 3, 42, 1)) == sample_windows(10, 3, 42, 1)
    assert sample_windows(2, 3, 42, 1) == [0, 1]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_length": 2}, "max_length must be at least 3"),
    ({"max_length": 10, "stride": 8}, "stride .* must be in \\[0, max_length - 2 = 8\\)"),
    ({"max_windows_per_document": 0}, "max_windows_per_document must be a positive integer"),
])
def test_bad_window_arguments(tokenizer, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_windows_dataset(corpus_of([5]), tokenizer, **{"max_length": 10, "stride": 2, **kwargs})


def test_train_tokenizer_and_make_windows_dirs(tmp_path):
    import datasets
    from transformers import AutoTokenizer

    from minialbert.data.corpora import ingest_corpus

    (tmp_path / "c.txt").write_text("\n".join(f"The Drug zorvex{i % 7} treats disease number {i} ." for i in range(50)))
    ingest_corpus({"type": "files", "paths": [str(tmp_path / "c.txt")], "text_layout": "line"}, tmp_path / "corpus")
    train_tokenizer(tmp_path / "corpus", tmp_path / "tok", vocab_size=120)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert tok.is_fast and tok.convert_ids_to_tokens(list(range(5))) == list(SPECIAL_TOKENS)
    assert tok.pad_token_id == 0 and tok.mask_token == "[MASK]"
    assert 50 < len(tok) <= 120
    assert tok.tokenize("The DRUG") == ["the", "drug"]  # lowercased by default
    cased = train_wordpiece(["The Drug"] * 5, vocab_size=60, lowercase=False, min_frequency=1)
    assert "Drug" in cased.tokenize("The Drug")

    ds = make_windows(tmp_path / "corpus", tmp_path / "tok", tmp_path / "win", max_length=6, stride=1,
                      max_windows_per_document=2, seed=1)
    assert len(ds) == len(datasets.load_from_disk(str(tmp_path / "win"))) > 50
    info = json.loads((tmp_path / "win" / "windowing.json").read_text())
    assert info["windows"] == len(ds) and info["documents"] == 50
    with pytest.raises(ConfigError, match="missing-tok: cannot load a tokenizer"):
        load_tokenizer(tmp_path / "missing-tok")


def test_cli_train_tokenizer_and_make_windows(tmp_path):
    from minialbert.cli import main
    from minialbert.data.corpora import ingest_corpus

    ingest_corpus({"type": "files", "paths": [str(_write(tmp_path / "c.txt", "alpha beta gamma\n" * 20))],
                   "text_layout": "line"}, tmp_path / "corpus")
    assert main(["train-tokenizer", "--corpus", str(tmp_path / "corpus"), "--output", str(tmp_path / "tok"),
                 "--vocab-size", "60"]) == 0
    assert main(["make-windows", "--corpus", str(tmp_path / "corpus"), "--tokenizer", str(tmp_path / "tok"),
                 "--output", str(tmp_path / "win"), "--max-length", "4", "--stride", "1",
                 "--max-windows-per-document", "null"]) == 0
    info = json.loads((tmp_path / "win" / "windowing.json").read_text())
    assert info["windows"] == 20 * num_windows(3, 2, 1) and info["max_windows_per_document"] is None
    # 0 no longer means "keep all" (null does): it is refused naming the key
    assert main(["make-windows", "--corpus", str(tmp_path / "corpus"), "--tokenizer", str(tmp_path / "tok"),
                 "--output", str(tmp_path / "win0"), "--max-windows-per-document", "0"]) == 2


def _write(path, text):
    path.write_text(text)
    return path
