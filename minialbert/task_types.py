"""Task types: everything that depends on the kind of task, one class per kind.

A task's type (`type` in a task spec and in task.json: "single", "pair", "regression",
"token") decides, at every stage:
  reading      how a row of a custom file becomes an example (text columns, or tokens and
               tags), how a raw label is parsed;
  labels       how the label set is collected and ordered, how labels go into Arrow;
  prepared     the label column of a prepared split;
  encoding     how a split is tokenized for a model, and the collator that pads a batch;
  model        which transformers Auto head class and which `from_pretrained` kwargs;
  training     how the targets are prepared (regression: standardised);
  evaluation   how logits become predictions and how predictions and gold become the
               metric's inputs; the metric module, its config and the default main metric.
`minialbert.tasks` and `minialbert.finetune` ask the type (`task_type(name)`, or the
`task_type` property of a TaskSpec or Task) and never compare type names.

To add a type (e.g. multiple choice): subclass TaskType here, overriding what differs from
sentence classification, and add it to TASK_TYPES; the model side needs at most a head class
(modeling.py) when MiniALBERT has none for the type's Auto class.

Cheap to import (no torch, transformers nor datasets at module level): `minialbert.tasks`
imports it, and `minialbert prepare-task --help` must answer at once.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from minialbert.utils import ConfigError

IGNORE_INDEX = -100  # label of positions the loss and the metric skip (special tokens, later sub-words)


def column(dataset, name: str) -> list:
    """A dataset column as a plain list (datasets returns a lazy Column object)."""
    return list(dataset[name])


# --------------------------------------------------------------------------------------------
# Encoding: raw text -> token ids with the model's tokenizer
# --------------------------------------------------------------------------------------------
def encode_sequences(task, split: str, tokenizer, max_length: int) -> list[dict]:
    """Sentence (pair) classification / regression features; the label goes in `labels`."""
    dataset = task.splits[split]
    pairs = column(dataset, "text_pair") if "text_pair" in dataset.column_names else None
    encoded = tokenizer(column(dataset, "text"), pairs, truncation=True, max_length=max_length)
    labels = column(dataset, "label") if "label" in dataset.column_names else None
    features = []
    for i in range(len(dataset)):
        feature = {key: values[i] for key, values in encoded.items()}
        if labels is not None:
            feature["labels"] = labels[i]
        features.append(feature)
    return features


def chunk_words(subword_counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Split a sentence's words into [start, end) chunks whose sub-words fit in `budget`.

    A word longer than the budget on its own gets a chunk alone (its later sub-words are then
    cut, but its first sub-word, the one that is scored, survives)."""
    chunks, start, used = [], 0, 0
    for i, count in enumerate(subword_counts):
        if i > start and used + count > budget:
            chunks.append((start, i))
            start, used = i, 0
        used += count
    if subword_counts:
        chunks.append((start, len(subword_counts)))
    return chunks


def encode_words(task, split: str, tokenizer, max_length: int) -> list[dict]:
    """Token-classification features, one per chunk of a sentence. Each carries `sentence`
    (index), `word_start` and `word_positions` (token position of each word's first sub-word,
    or -1 for a word the tokenizer maps to nothing) so predictions can be put back per word."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{tokenizer.name_or_path}: NER needs a fast tokenizer (word_ids), got {type(tokenizer).__name__}")
    dataset = task.splits[split]
    sentences = column(dataset, "tokens")
    tags = column(dataset, "tags") if "tags" in dataset.column_names else None
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    plain = tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
    pieces = []  # (sentence index, word start, word end)
    for s in range(len(sentences)):
        counts = [0] * len(sentences[s])
        for w in plain.word_ids(s):
            if w is not None:
                counts[w] += 1
        pieces.extend((s, a, b) for a, b in chunk_words(counts, budget))
    words = [sentences[s][a:b] for s, a, b in pieces]
    encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    features = []
    for i, (s, a, b) in enumerate(pieces):
        word_ids = encoded.word_ids(i)
        positions = [-1] * (b - a)
        for pos, w in enumerate(word_ids):
            if w is not None and positions[w] == -1:
                positions[w] = pos
        feature = {key: values[i] for key, values in encoded.items()}
        feature.update(sentence=s, word_start=a, word_positions=positions)
        if tags is not None:
            labels = [IGNORE_INDEX] * len(word_ids)
            for w, pos in enumerate(positions):
                if pos >= 0:
                    labels[pos] = tags[s][a + w]
            feature["labels"] = labels
        features.append(feature)
    return features


def standardise_targets(train_features: list[dict]) -> tuple[float, float]:
    """Replace the training features' regression targets by z-scores, in place; return the
    (mean, std) that maps model outputs back to the task's scale."""
    targets = [float(f["labels"]) for f in train_features]
    mean = sum(targets) / len(targets)
    std = math.sqrt(sum((t - mean) ** 2 for t in targets) / len(targets)) or 1.0
    for f in train_features:
        f["labels"] = (float(f["labels"]) - mean) / std
    return mean, std


# --------------------------------------------------------------------------------------------
# The types
# --------------------------------------------------------------------------------------------
class TaskType:
    """One kind of task. The base class is sentence classification (one text, or a text pair,
    and one label from a label set per example); subclasses override what differs.

    `task` arguments are `minialbert.tasks.Task` objects (info + Arrow splits), `features`
    are the encoded examples of a split (dicts of token ids and `labels`)."""

    name: str = ""
    # Reading and preparing
    text_column_counts: tuple[int, ...] = (1,)  # how many text columns a `files` spec lists
    label_column: str = "label"  # the label column of a prepared split (absent when unlabelled)
    has_label_set: bool = True  # labels are names from a label set (task.json `labels`); else numbers
    min_labels: int = 2  # distinct labels the training split must have
    # Scoring: the metric module (minialbert/metric_modules), its config, the default main metric
    metric: str = "glue"
    metric_config: str | None = "classification"
    main_metric: str = "accuracy"
    # Model: the transformers Auto class of the head, and the loss HF picks (config.problem_type)
    auto_model: str = "AutoModelForSequenceClassification"
    problem_type: str | None = "single_label_classification"

    def __repr__(self) -> str:
        return f"<task type {self.name!r}: {type(self).__name__}>"

    # ---------------------------------------------------------------- reading
    def parse_label(self, raw: Any, path: Any, lineno: int) -> Any:
        """A raw label as read from a file (`path`, line `lineno`: named in errors)."""
        return str(raw)

    def read_row(self, path: Any, lineno: int, row: dict, text_columns: Sequence[str], label_column: str,
                 has_labels: bool) -> dict:
        """One example of a custom file's row (columns present and not null, checked)."""
        example = {"text": str(row[text_columns[0]])}
        if len(text_columns) == 2:
            example["text_pair"] = str(row[text_columns[1]])
        if has_labels:
            example["label"] = self.parse_label(row[label_column], path, lineno)
        return example

    # ---------------------------------------------------------------- labels and Arrow
    def collect_labels(self, examples: list[dict]) -> set:
        """The distinct labels used by a split's examples."""
        return {example["label"] for example in examples}

    def order_labels(self, labels: set[str]) -> list[str]:
        """Deterministic label order (a label's index is its id)."""
        return sorted(labels)

    def arrow_columns(self, examples: list[dict], has_labels: bool, labels: list[str] | None) -> tuple[dict, dict]:
        """({column: datasets feature}, {column: values}) of a prepared split."""
        import datasets

        features = {"text": datasets.Value("string")}
        columns = {"text": [e["text"] for e in examples]}
        if "text_pair" in examples[0]:
            features["text_pair"] = datasets.Value("string")
            columns["text_pair"] = [e["text_pair"] for e in examples]
        if has_labels:
            features[self.label_column], columns[self.label_column] = self.label_values(examples, labels)
        return features, columns

    def label_values(self, examples: list[dict], labels: list[str] | None) -> tuple[Any, list]:
        """(datasets feature, values) of the label column: label ids."""
        import datasets

        index = {label: i for i, label in enumerate(labels or [])}
        return datasets.Value("int64"), [index[e["label"]] for e in examples]

    # ---------------------------------------------------------------- model
    def encode(self, task, split: str, tokenizer, max_length: int) -> list[dict]:
        """The split's features for a model with this tokenizer."""
        return encode_sequences(task, split, tokenizer, max_length)

    def collator(self, tokenizer):
        """Pads a batch of features dynamically."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def auto_model_class(self):
        """The transformers Auto class whose `from_pretrained` puts the right head on an encoder."""
        import transformers

        return getattr(transformers, self.auto_model)

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        """`from_pretrained` kwargs: head size, label maps (kept in the model config), problem type."""
        kwargs: dict[str, Any] = dict(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                      label2id={label: i for i, label in enumerate(labels)})
        if self.problem_type is not None:
            kwargs["problem_type"] = self.problem_type
        return kwargs

    # ---------------------------------------------------------------- training and evaluation
    def prepare_targets(self, train_features: list[dict]) -> Any:
        """Change the training targets in place if the model should learn other ones; returns
        what `predictions` needs to map outputs back (None: nothing)."""
        return None

    def predictions(self, logits, features: list[dict], target_scale: Any) -> list:
        """One prediction per feature of a batch, from the model's (float) logits: a label id."""
        return logits.argmax(-1).cpu().tolist()

    def metric_inputs(self, task, split: str, features: list[dict], outputs: list) -> tuple[list, list]:
        """(predictions, references) for the metric, from the split's per-feature predictions."""
        return outputs, column(task.splits[split], self.label_column)

    # ---------------------------------------------------------------- adaptive depth (minialbert.exits)
    # What one recursion's logits say when a recursive model may stop there: a stop score per
    # example (higher: surer) and the answer that is compared across recursions. A type without
    # a confidence (regression) returns None as the score; its rules then look at how far the
    # answer moved since the previous recursion (`answer_distance`).
    def exit_answers(self, logits, token_mask, target_scale):
        """(stop score (B,), answer (B,)) of a batch's logits: the top class probability and the
        label id. `token_mask` (token types: the scored positions) is unused here."""
        confidence, answer = logits.float().softmax(-1).max(-1)
        return confidence, answer

    def answer_distance(self, a, b):
        """(B,) how far two recursions' answers are apart: 0 when they agree, > 0 when not."""
        return (a != b).float()

    def exit_distill_loss(self, logits, final_logits, labels):
        """An earlier exit distilled from the final one (detached): KL(final || exit), batch mean."""
        import torch.nn.functional as F

        target = final_logits.detach().float().softmax(-1)
        return F.kl_div(logits.float().log_softmax(-1), target, reduction="batchmean")


class SingleSentence(TaskType):
    """One text, one label (SST-2, CoLA)."""

    name = "single"


class SentencePair(TaskType):
    """Two texts, one label (MRPC, MNLI, ...)."""

    name = "pair"
    text_column_counts = (2,)


class Regression(TaskType):
    """One text or a pair, one number (STS-B). The model learns standardised targets (z-scores
    of the training split's) and its outputs are mapped back to the task's scale: with raw 0-5
    scores a pretrained post-LN encoder was seen to collapse to predicting the mean (STS-B
    Pearson ~0 against ~0.9 standardised)."""

    name = "regression"
    text_column_counts = (1, 2)
    has_label_set = False
    metric_config = "regression"
    main_metric = "pearson"
    problem_type = "regression"

    def parse_label(self, raw: Any, path: Any, lineno: int) -> float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: line {lineno}: label {raw!r} is not a number (regression task)") from None

    def label_values(self, examples: list[dict], labels: list[str] | None) -> tuple[Any, list]:
        import datasets

        return datasets.Value("float32"), [float(e["label"]) for e in examples]

    def model_kwargs(self, labels: list[str] | None) -> dict[str, Any]:
        return dict(num_labels=1, problem_type=self.problem_type)

    def prepare_targets(self, train_features: list[dict]) -> tuple[float, float]:
        return standardise_targets(train_features)

    def predictions(self, logits, features: list[dict], target_scale: tuple[float, float]) -> list:
        """Scores on the task's scale: output * std + mean of the training targets."""
        mean, std = target_scale
        return (logits.squeeze(-1) * std + mean).cpu().tolist()

    def exit_answers(self, logits, token_mask, target_scale):
        """No confidence (None); the answer is the score on the task's scale."""
        mean, std = target_scale
        return None, logits.float().squeeze(-1) * std + mean

    def answer_distance(self, a, b):
        return (a - b).abs()

    def exit_distill_loss(self, logits, final_logits, labels):
        """MSE to the final recursion's (detached) output, in the standardised units it learns."""
        import torch.nn.functional as F

        return F.mse_loss(logits.float().squeeze(-1), final_logits.detach().float().squeeze(-1))


class TokenClassification(TaskType):
    """A tag per word (NER). Scored per word, on the tag of its first sub-word; a sentence
    longer than the maximum length is split into chunks (`encode_words`), never truncated."""

    name = "token"
    label_column = "tags"
    min_labels = 0  # one tag is enough (a corpus of "O" still trains)
    metric = "seqeval"
    metric_config = None
    main_metric = "f1"
    auto_model = "AutoModelForTokenClassification"
    problem_type = None  # HF's problem_type selects a sequence head's loss

    def read_row(self, path: Any, lineno: int, row: dict, text_columns: Sequence[str], label_column: str,
                 has_labels: bool) -> dict:
        tokens = row[text_columns[0]]
        tags = row[label_column] if has_labels else None
        if not isinstance(tokens, list) or (has_labels and not isinstance(tags, list)):
            raise ConfigError(f"{path}: line {lineno}: token tasks need lists of tokens and tags (JSON lines)")
        if has_labels and len(tokens) != len(tags):
            raise ConfigError(f"{path}: line {lineno}: {len(tokens)} tokens but {len(tags)} tags")
        for token in tokens:
            if not str(token).strip():
                raise ConfigError(f"{path}: line {lineno}: a tag without a token (empty token)")
        example = {"tokens": [str(t) for t in tokens]}
        if has_labels:
            example["tags"] = [str(t) for t in tags]
        return example

    def collect_labels(self, examples: list[dict]) -> set:
        return {tag for example in examples for tag in example["tags"]}

    def order_labels(self, labels: set[str]) -> list[str]:
        """O first, then grouped by entity type (B-X before I-X)."""
        return sorted(labels, key=lambda t: (t != "O", t[2:] if t[1:2] == "-" else t, t))

    def arrow_columns(self, examples: list[dict], has_labels: bool, labels: list[str] | None) -> tuple[dict, dict]:
        import datasets

        index = {label: i for i, label in enumerate(labels or [])}
        features = {"tokens": datasets.Sequence(datasets.Value("string"))}
        columns = {"tokens": [e["tokens"] for e in examples]}
        if has_labels:
            features["tags"] = datasets.Sequence(datasets.Value("int64"))
            columns["tags"] = [[index[t] for t in e["tags"]] for e in examples]
        return features, columns

    def encode(self, task, split: str, tokenizer, max_length: int) -> list[dict]:
        return encode_words(task, split, tokenizer, max_length)

    def collator(self, tokenizer):
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def predictions(self, logits, features: list[dict], target_scale: Any) -> list:
        """The predicted tag id of each word of each chunk (None: a word without sub-words)."""
        return [[value[p] if p >= 0 else None for p in feature["word_positions"]]
                for value, feature in zip(logits.argmax(-1).cpu().tolist(), features)]

    def exit_answers(self, logits, token_mask, target_scale):
        """A sequence is as sure as its least sure scored token (it exits when all its tokens
        pass); the answer is the tag id of every token, -1 where nothing is scored."""
        confidence, answer = logits.float().softmax(-1).max(-1)  # (B, T)
        confidence = confidence.masked_fill(~token_mask, 1.0).min(-1).values
        return confidence, answer.masked_fill(~token_mask, -1)

    def answer_distance(self, a, b):
        return (a != b).any(-1).float()

    def exit_distill_loss(self, logits, final_logits, labels):
        """KL(final || exit) per scored token (labels != -100), token mean."""
        import torch.nn.functional as F

        scored = labels != IGNORE_INDEX
        target = final_logits.detach().float()[scored].softmax(-1)
        if target.numel() == 0:
            return logits.sum() * 0.0
        return F.kl_div(logits.float()[scored].log_softmax(-1), target, reduction="batchmean")

    def metric_inputs(self, task, split: str, features: list[dict], outputs: list) -> tuple[list, list]:
        labels = task.labels
        gold = [[labels[t] for t in tags] for tags in column(task.splits[split], "tags")]
        return word_predictions(task, split, features, outputs), gold


def word_predictions(task, split: str, features: list[dict], chunk_outputs: list) -> list[list[str]]:
    """Reassemble the per-chunk word predictions into one tag sequence per sentence.
    A word the tokenizer maps to no sub-word gets "O" (it cannot be predicted)."""
    labels = task.labels
    fallback = "O" if "O" in labels else labels[0]
    sentences = [[fallback] * len(tokens) for tokens in column(task.splits[split], "tokens")]
    for feature, predicted in zip(features, chunk_outputs):
        for offset, tag_id in enumerate(predicted):
            if tag_id is not None:
                sentences[feature["sentence"]][feature["word_start"] + offset] = labels[tag_id]
    return sentences


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------
TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (SingleSentence(), SentencePair(), Regression(),
                                                       TokenClassification())}


def task_type(name: str) -> TaskType:
    """The task type of a name (as in a task spec or task.json)."""
    try:
        return TASK_TYPES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task type {name!r}; expected one of {list(TASK_TYPES)}") from None
