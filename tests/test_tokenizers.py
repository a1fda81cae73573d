"""Tokenizer training gives the same vocabulary, ids included, in every process (the demo's
teacher, students and every score downstream depend on it)."""

from __future__ import annotations

import subprocess
import sys

TRAIN = """
import hashlib, json
from minialbert.demo import DemoSizes, demo_corpus_documents
from minialbert.data.tokenizers import train_wordpiece
texts = demo_corpus_documents(0, DemoSizes(num_drugs=20, num_diseases=10, num_people=15, num_cities=10))
vocab = train_wordpiece(texts, vocab_size=4000).get_vocab()
print(len(vocab), hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest())
"""


def test_the_same_corpus_gives_the_same_vocabulary_in_every_process():
    # each process seeds the trainer's hash maps anew: on this corpus the trainer alone gave a
    # different vocabulary in each of 4 processes (huggingface/tokenizers#1794)
    outputs = {subprocess.run([sys.executable, "-c", TRAIN], capture_output=True, text=True, check=True,
                              timeout=300).stdout.strip() for _ in range(4)}
    assert len(outputs) == 1, outputs
    size = int(next(iter(outputs)).split()[0])
    assert size > 200  # a real vocabulary, not the special tokens alone
