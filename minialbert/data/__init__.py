"""Corpus ingestion, tokenizers and windowing: from raw text to the windows distillation reads.

corpora: a corpus source (hub dataset, local files, the demo world) -> an Arrow dir, column `text`.
tokenizers: load a fast tokenizer, or train a WordPiece one on a corpus (the demo).
windows: documents -> windows of max_length tokens with a stride, at most k per document.
"""

from minialbert.data.corpora import ingest_corpus, load_corpus, read_source_spec, validate_source
from minialbert.data.tokenizers import load_tokenizer, train_tokenizer, train_wordpiece
from minialbert.data.windows import make_windows, make_windows_dataset, num_windows, window_spans

__all__ = [
    "ingest_corpus", "load_corpus", "read_source_spec", "validate_source",
    "load_tokenizer", "train_tokenizer", "train_wordpiece",
    "make_windows", "make_windows_dataset", "num_windows", "window_spans",
]
