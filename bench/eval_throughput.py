"""Evaluation throughput: minialbert's batched evaluation (dynamic padding, examples sorted by
length) against the authors' way (one example at a time, padded to the maximum length), for
the same model and data. Prints one JSON line with the examples/s of both and their `ratio`.

    python bench/eval_throughput.py [--model DIR] [--examples 512] [--max-length 128]

Without --model, a randomly initialised BERT with a synthetic WordPiece vocabulary is built in a
temp dir, of one of two published small shapes (--size): `tiny` = google's BERT-Tiny
(H=128, 2 layers, 2 heads, FFN 512; the default) or `small` = TinyBERT-4L-312D (H=312, 4 layers,
12 heads, FFN 1200). Sentences follow GLUE's single-sentence length profile (SST-2-like: about
24 tokens on average, a long tail). Tokenization is done beforehand for both paths: only
evaluation is timed. The ratio grows with the per-call overhead of batch-1 evaluation (small
models) and shrinks towards the padding ratio (max length / mean length) for large models.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from minialbert import finetune as ft
from minialbert.tasks import Task

import datasets


def synthetic_vocab(size: int = 3000) -> list[str]:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(size)}
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + sorted(words)


SIZES = {  # name -> (hidden, layers, heads, intermediate)
    "tiny": (128, 2, 2, 512),  # google/bert_uncased_L-2_H-128_A-2
    "small": (312, 4, 12, 1200),  # huawei-noah/TinyBERT_General_4L_312D
}


def build_model_dir(root: Path, size: str) -> Path:
    """A random BERT of a published small shape with its tokenizer, saved like every model dir."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = synthetic_vocab()
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})
    torch.manual_seed(0)
    hidden, layers, heads, intermediate = SIZES[size]
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=2)
    model_dir = root / "model"
    BertForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def glue_like_sentences(vocab: list[str], n: int, seed: int = 0) -> list[str]:
    """Sentences with SST-2's length profile: log-normal around ~18 words, 3..55 (SST-2 dev's longest)."""
    rng = random.Random(seed)
    words = [w for w in vocab if w.isalpha()]
    out = []
    for _ in range(n):
        length = min(55, max(3, int(rng.lognormvariate(2.9, 0.5))))
        out.append(" ".join(rng.choice(words) for _ in range(length)) + " .")
    return out


def make_run(model_dir: Path, sentences: list[str], max_length: int, batch_size: int) -> ft.Run:
    """The same Run object minialbert finetune evaluates with (model, tokenizer, encoded split)."""
    dataset = datasets.Dataset.from_dict({"text": sentences, "label": [i % 2 for i in range(len(sentences))]})
    task = Task({"name": "bench", "type": "single", "metric": "glue", "metric_config": "classification",
                 "main_metric": "accuracy", "labels": ["0", "1"], "splits": {"dev": "dev"}}, {"dev": dataset})
    config = ft.FinetuneConfig(model=str(model_dir), task="", max_length=max_length, eval_batch_size=batch_size,
                               device="cpu")
    tokenizer = ft.load_tokenizer(config)
    model = ft.load_model(config, task).eval()
    features = {"dev": ft.encode_sequences(task, "dev", tokenizer, max_length)}
    return ft.Run(config, task, tokenizer, model, torch.device("cpu"), features,
                  ft.make_collator(tokenizer, "single"), ("input_ids", "attention_mask", "token_type_ids"), None)


def batched(run: ft.Run) -> tuple[float, list[int]]:
    start = time.perf_counter()
    predictions = ft.predict(run, "dev")
    return time.perf_counter() - start, predictions


@torch.no_grad()
def one_at_a_time(run: ft.Run) -> tuple[float, list[int]]:
    """The authors' evaluation: batch size 1, every example padded to max_length."""
    inputs = [run.tokenizer.pad([{k: v for k, v in f.items() if k != "labels"}], padding="max_length",
                                max_length=run.config.max_length, return_tensors="pt")
              for f in run.features["dev"]]
    run.model.eval()
    predictions = []
    start = time.perf_counter()
    for x in inputs:
        predictions.append(int(run.model(**x).logits.argmax(-1)))
    return time.perf_counter() - start, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir (default: a random BERT of --size)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="shape of the default random BERT")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_model_dir(Path(tmp), args.size)
        vocab = synthetic_vocab() if not args.model else list(ft.load_tokenizer(
            ft.FinetuneConfig(model=str(model_dir), task="")).get_vocab())
        run = make_run(model_dir, glue_like_sentences(vocab, args.examples), args.max_length, args.batch_size)
        with torch.no_grad():  # warm-up (allocator, kernels) on one batch
            run.model(**ft.collate(run, list(range(min(args.batch_size, args.examples))), run.features["dev"])).logits
        batched_seconds, batched_predictions = batched(run)
        naive_seconds, naive_predictions = one_at_a_time(run)
    lengths = [len(f["input_ids"]) for f in run.features["dev"]]
    agree = sum(a == b for a, b in zip(batched_predictions, naive_predictions)) / len(lengths)
    n = len(lengths)
    print(json.dumps({
        "model": str(args.model or "random BERT {} (H={}, L={}, A={}, I={})".format(args.size, *SIZES[args.size])),
        "examples": n,
        "mean_tokens": round(sum(lengths) / n, 1),
        "max_length": args.max_length,
        "eval_batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "batched_examples_per_second": round(n / batched_seconds, 1),
        "naive_examples_per_second": round(n / naive_seconds, 1),
        "ratio": round(naive_seconds / batched_seconds, 2),
        "predictions_agree": agree,
    }))


if __name__ == "__main__":
    main()
