"""Evaluation throughput: minialbert's batched evaluation (dynamic padding, examples sorted by
length, one metric call) against the authors' way, for the same model and data. Prints one JSON
line with the examples/s of both and their `ratio`.

    python bench/eval_throughput.py [--model DIR] [--examples 256] [--max-length 128]

The authors' way is their `glue_inference.py`: the dev set is tokenized with
`padding="max_length"` and no `max_length`, i.e. padded to the tokenizer's `model_max_length`
(512 for bert-base-uncased); then `evaluate()` loops over the rows with batch size 1, calls the
collator on each, runs the model, takes the argmax and feeds one prediction at a time to
`metric.add_batch`, and computes the metric at the end. `naive_*` reproduces that loop (our
shipped metric module stands in for `load_metric("glue", ...)`). Ours is
`finetune.evaluate_split`, what `minialbert finetune` runs: length-sorted batches padded to the
batch's longest example, truncation at `--max-length`, one metric computation. Both timings
cover model, collation and metric (medians of `--repeats` interleaved runs); tokenization is
done beforehand and is not timed. The JSON also gives `ratio_same_padding`, the naive loop
padded only to `--max-length`, which separates the gain of batching from that of not padding
to 512.

Without --model, a randomly initialised BERT with a synthetic WordPiece vocabulary
(`model_max_length` 512, as bert-base-uncased's tokenizer) is built in a temp dir, of one of two
published small shapes (--size): `tiny` = google's BERT-Tiny (H=128, 2 layers, 2 heads, FFN 512;
the default) or `small` = TinyBERT-4L-312D (H=312, 4 layers, 12 heads, FFN 1200). Sentences
follow GLUE's single-sentence length profile (SST-2-like: about 24 tokens on average, a long
tail).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from minialbert import finetune as ft
from minialbert.command_configs import FinetuneConfig
from minialbert.metrics import load_metric
from minialbert.tasks import Task
from minialbert.utils import ConfigError

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
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, model_max_length=512)
    torch.manual_seed(0)
    hidden, layers, heads, intermediate = SIZES[size]
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, num_labels=2)
    model_dir = root / "model"
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        # A random encoder maps every sentence near one point, so a random head predicts one
        # class everywhere and "the two paths agree" would prove nothing. Centre the head on
        # held-out sentences so that the prediction depends on the input.
        model.classifier.weight.normal_(0.0, 1.0)
        batch = tokenizer(glue_like_sentences(vocab, 64, seed=1), padding=True, return_tensors="pt")
        model.classifier.bias -= model(**batch).logits.median(0).values
    model.save_pretrained(model_dir)
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


def make_run(model_dir: Path, sentences: list[str], max_length: int, batch_size: int,
             max_tokens: str | int = "auto") -> ft.Run:
    """The same Run object minialbert finetune evaluates with (model, tokenizer, encoded split)."""
    dataset = datasets.Dataset.from_dict({"text": sentences, "label": [i % 2 for i in range(len(sentences))]})
    task = Task({"name": "bench", "type": "single", "metric": "glue", "metric_config": "classification",
                 "main_metric": "accuracy", "labels": ["0", "1"], "splits": {"dev": "dev"}}, {"dev": dataset})
    # validated like `minialbert finetune`'s flags (ConfigError on a bad value); lr and output are
    # required by the config but unused here: nothing is trained or written
    config = FinetuneConfig.from_dict({"model": str(model_dir), "task": "bench", "output": "unused", "lr": 1e-3,
                                       "max_length": max_length, "eval_batch_size": batch_size,
                                       "eval_max_tokens": max_tokens, "device": "cpu"})
    tokenizer = ft.load_tokenizer(config)
    model = ft.load_model(config, task).eval()
    features = {"dev": task.task_type.encode(task, "dev", tokenizer, max_length)}
    from minialbert.precision import Precision

    return ft.Run(config, task, tokenizer, model, torch.device("cpu"), features,
                  task.task_type.collator(tokenizer), ("input_ids", "attention_mask", "token_type_ids"),
                  Precision("cpu"))


def batched(run: ft.Run) -> tuple[float, dict[str, float]]:
    """Ours: `minialbert finetune`'s evaluation of a split (predictions and metric)."""
    start = time.perf_counter()
    scores = ft.evaluate_split(run, "dev")
    return time.perf_counter() - start, scores


def authors_max_length(tokenizer, model) -> int:
    """What `padding="max_length"` without `max_length` pads to: the tokenizer's
    `model_max_length` (512 for bert-base-uncased), bounded by the model's positions (the
    "unset" sentinel of a tokenizer saved without a limit then gives the positions)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    return min(tokenizer.model_max_length, positions) if positions else tokenizer.model_max_length


@torch.no_grad()
def one_at_a_time(run: ft.Run, pad_to: int) -> tuple[float, dict[str, float], list[int]]:
    """The authors' evaluation loop: rows pre-padded to `pad_to`, each collated and run alone,
    one prediction at a time into the metric, computed at the end."""
    from transformers import DataCollatorWithPadding

    keys = [k for k in run.model_keys if k != "labels"]
    rows = []
    for f in run.features["dev"]:
        padded = run.tokenizer.pad({k: f[k] for k in keys}, padding="max_length", max_length=pad_to)
        rows.append({**padded, "labels": f["labels"]})
    collator = DataCollatorWithPadding(run.tokenizer, return_tensors="pt")
    metric = load_metric(run.task.info["metric"], run.task.info["metric_config"])
    predictions = []
    start = time.perf_counter()
    for row in rows:
        sample = collator([row])
        labels = sample.pop("labels")
        output = run.model(**sample).logits.argmax(-1).cpu().numpy()
        metric.add_batch(predictions=output, references=labels.numpy())
        predictions.append(int(output[0]))
    scores = metric.compute()
    return time.perf_counter() - start, {k: float(v) for k, v in scores.items()}, predictions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir (default: a random BERT of --size)")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny", help="shape of the default random BERT")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=128, help="ours: truncation length (finetune's default)")
    parser.add_argument("--naive-max-length", type=int,
                        help="the authors' padding length (default: the tokenizer's model_max_length, as theirs)")
    parser.add_argument("--batch-size", type=int, default=64, help="ours: eval batch size (finetune's default)")
    parser.add_argument("--eval-max-tokens", default="auto", type=lambda t: t if t == "auto" else int(t),
                        help="ours: padded tokens per batch: auto or an integer (finetune's default)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; medians are reported")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else build_model_dir(Path(tmp), args.size)
        vocab = synthetic_vocab() if not args.model else list(ft.load_tokenizer(
            FinetuneConfig(model=str(model_dir), task="bench", output="unused", lr=1e-3)).get_vocab())
        try:
            run = make_run(model_dir, glue_like_sentences(vocab, args.examples), args.max_length, args.batch_size,
                           args.eval_max_tokens)
        except ConfigError as e:
            parser.error(str(e))
        pad_to = args.naive_max_length or authors_max_length(run.tokenizer, run.model)
        # warm-up (allocator, kernels, metric module) for both paths
        ft.evaluate_split(run, "dev")
        with torch.no_grad():
            run.model(**run.tokenizer.pad({"input_ids": [run.features["dev"][0]["input_ids"]]}, padding="max_length",
                                          max_length=pad_to, return_tensors="pt")).logits
        timings = {"batched": [], "naive": [], "same_padding": []}
        for _ in range(args.repeats):  # interleaved, so machine noise hits all three alike
            seconds, batched_scores = batched(run)
            timings["batched"].append(seconds)
            seconds, naive_scores, naive_predictions = one_at_a_time(run, pad_to)
            timings["naive"].append(seconds)
            timings["same_padding"].append(one_at_a_time(run, args.max_length)[0])
        batched_predictions = ft.predict(run, "dev")
    batched_seconds, naive_seconds, same_padding_seconds = (
        statistics.median(timings[k]) for k in ("batched", "naive", "same_padding"))
    lengths = [len(f["input_ids"]) for f in run.features["dev"]]
    n = len(lengths)
    print(json.dumps({
        "model": str(args.model or "random BERT {} (H={}, L={}, A={}, I={})".format(args.size, *SIZES[args.size])),
        "examples": n,
        "mean_tokens": round(sum(lengths) / n, 1),
        "max_length": args.max_length,
        "naive_padded_to": pad_to,
        "eval_batch_size": args.batch_size,
        "eval_max_tokens": ft.eval_token_budget(run.config, run.device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "batched_examples_per_second": round(n / batched_seconds, 1),
        "naive_examples_per_second": round(n / naive_seconds, 1),
        "ratio": round(naive_seconds / batched_seconds, 2),
        "ratio_same_padding": round(same_padding_seconds / batched_seconds, 2),
        "scores_agree": batched_scores == naive_scores,
        "predictions_agree": batched_predictions == naive_predictions,
        "predicted_classes": len(set(naive_predictions)),
    }))


if __name__ == "__main__":
    main()
