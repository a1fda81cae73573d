"""Fine-tune any encoder (MiniALBERT, BERT teachers, DistilBERT/TinyBERT-style baselines) on a
task, with full fine-tuning or adapter tuning, and write `metrics.json`.

A plain PyTorch loop, one function per stage: `setup` (task, tokenizer, model, encoded splits),
`train_step`, `train`, `evaluate_split`, `save_outputs`. What differs from the authors' scripts
(REFERENCE section 6), on purpose:
- evaluation is batched with dynamic padding, examples sorted by length (not one example at a
  time padded to the maximum length);
- NER is scored per word (label on the first sub-word, -100 on the rest), and a sentence
  longer than the maximum length is split into chunks, never truncated, so every word is scored;
- every run records its own seed and the hash of its resolved config.

CLI: minialbert finetune --model DIR --task TASK --mode full|adapter --lr LR --seed S --output DIR
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from minialbert.adapters import count_parameters, prepare_for_adapter_tuning
from minialbert.metrics import compute_metric
from minialbert.optim import build_optimizer
from minialbert.tasks import Task, load_task
from minialbert.command_configs import FinetuneConfig
from minialbert.utils import ConfigError, atomic_directory, config_hash, set_seed, write_json_atomic

logger = logging.getLogger(__name__)

CPU_EVAL_MAX_TOKENS = 1024  # see eval_token_budget


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------
def length_grouped_batches(lengths: list[int], batch_size: int, generator: random.Random,
                           group_factor: int = 50) -> list[list[int]]:
    """Shuffled batches of similar-length examples: shuffle, sort within mega-batches of
    `group_factor` batches, cut into batches, shuffle the batches (less padding, still random)."""
    order = list(range(len(lengths)))
    generator.shuffle(order)
    mega = batch_size * group_factor
    batches = []
    for start in range(0, len(order), mega):
        group = sorted(order[start:start + mega], key=lambda i: -lengths[i])
        batches.extend(group[i:i + batch_size] for i in range(0, len(group), batch_size))
    generator.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Evaluation batches of examples sorted by length (longest first), so padding is minimal:
    at most `batch_size` examples and, when `max_tokens` is set, at most that many padded tokens
    (examples x the batch's longest; an example longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch and len(batch) < batch_size and (
                max_tokens is None or (len(batch) + 1) * lengths[batch[0]] <= max_tokens):
            batch.append(i)
        else:
            batches.append([i])
    return batches


def eval_token_budget(config: "FinetuneConfig", device: torch.device) -> int | None:
    """Padded tokens per evaluation batch. On CPU, activations beyond about a thousand tokens
    fall out of cache and throughput drops: length-sorted batches of SST-2-like sentences on 2
    threads (examples/s at 512 / 1024 / 2048 / 4096 / uncapped tokens) gave 5591 / 6196 / 5861 /
    5572 / 1607 for a 2-layer 128-wide BERT and 261 / 253 / 230 / 182 / 86 for a 2-layer
    768-wide one. So `auto` caps batches at CPU_EVAL_MAX_TOKENS there; a GPU takes whole
    `eval_batch_size` batches."""
    if config.eval_max_tokens == "auto":
        return CPU_EVAL_MAX_TOKENS if device.type == "cpu" else None
    return int(config.eval_max_tokens)


MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def collate(run: "Run", indices: list[int], features: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a batch dynamically and move it to the device; keep only what the model accepts."""
    batch = run.collator([{k: features[i][k] for k in run.model_keys if k in features[i]} for i in indices])
    return {k: v.to(run.device) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# Setup
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """The state of one fine-tuning run."""

    config: FinetuneConfig
    task: Task
    tokenizer: Any
    model: nn.Module
    device: torch.device
    features: dict[str, list[dict]]
    collator: Any
    model_keys: tuple[str, ...]
    autocast_dtype: torch.dtype | None
    # What the task type's `prepare_targets` returned, for its `predictions` to map outputs
    # back to the task's scale (regression: the training targets' (mean, std)); else None.
    target_scale: Any = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(config: FinetuneConfig, task: Task):
    """The encoder with a fresh head sized for the task; label maps go into the model config."""
    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    kind = task.task_type
    try:
        # ignore_mismatched_sizes: a model dir fine-tuned on another task has a head of another size
        return kind.auto_model_class().from_pretrained(config.model, ignore_mismatched_sizes=True,
                                                       **kind.model_kwargs(task.labels))
    except OSError as e:
        raise ConfigError(f"--model {config.model}: cannot load a model ({e})") from None


def load_tokenizer(config: FinetuneConfig):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(config.model)
    except (OSError, ValueError) as e:
        raise ConfigError(f"--model {config.model}: no tokenizer saved in the model dir ({e})") from None
    tokenizer.padding_side = "right"  # NER predictions are read back at unpadded positions
    return tokenizer


def setup(config: FinetuneConfig) -> Run:
    """Load the task, the model's own tokenizer and the model; encode every split."""
    if config.threads:
        # an oversubscribed CPU (more threads than free cores) can run 10x slower, not 2x
        torch.set_num_threads(config.threads)
    set_seed(config.seed)
    task = load_task(config.task)
    kind = task.task_type
    tokenizer = load_tokenizer(config)
    model = load_model(config, task)
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and config.max_length > positions:
        raise ConfigError(f"--max-length {config.max_length}: the model {config.model} has only {positions} positions")
    if config.mode == "adapter":
        model = prepare_for_adapter_tuning(model, reduction_factor=config.reduction_factor)
    if config.gradient_checkpointing:
        if not model.supports_gradient_checkpointing:
            raise ConfigError(f"gradient_checkpointing: {type(model).__name__} ({config.model}) does not support it")
        model.activation_checkpointing_enable({"use_reentrant": False})
    device = pick_device(config.device)
    model.to(device)
    features = {split: kind.encode(task, split, tokenizer, config.max_length) for split in task.splits}
    target_scale = kind.prepare_targets(features["train"])
    accepted = set(inspect.signature(model.forward).parameters)
    model_keys = tuple(k for k in MODEL_KEYS if k in accepted)  # e.g. DistilBERT takes no token_type_ids
    use_bf16 = config.bf16 is True or (
        config.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return Run(config, task, tokenizer, model, device, features, kind.collator(tokenizer),
               model_keys, torch.bfloat16 if use_bf16 else None, target_scale)


def autocast(run: Run):
    if run.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=run.device.type, dtype=run.autocast_dtype)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """The warm-up steps of a ratio of the training steps (rounded up)."""
    return int(math.ceil(warmup_ratio * total_steps))


def train_step(run: Run, batch: dict, optimizer, scheduler) -> float:
    """One optimisation step; returns the loss."""
    with autocast(run):
        loss = run.model(**batch).loss
    loss.backward()
    if run.config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def epoch_batches(run: Run, rng: random.Random) -> Iterator[list[list[int]]]:
    """Length-grouped batches per epoch; a fractional last epoch takes a prefix of its batches."""
    lengths = [len(f["input_ids"]) for f in run.features["train"]]
    full, rest = int(run.config.epochs), run.config.epochs - int(run.config.epochs)
    for _ in range(full):
        yield length_grouped_batches(lengths, run.config.batch_size, rng)
    if rest > 0:
        batches = length_grouped_batches(lengths, run.config.batch_size, rng)
        yield batches[: max(1, int(round(rest * len(batches))))]


def train(run: Run) -> dict:
    """Train on the training split; returns {train_seconds, train_examples, steps, final_loss}."""
    from transformers import get_scheduler

    config = run.config
    features = run.features["train"]
    rng = random.Random(config.seed)  # batch order depends only on the seed
    epochs = list(epoch_batches(run, rng))
    total_steps = sum(len(batches) for batches in epochs)
    optimizer = build_optimizer(run.model, config.lr, config.weight_decay)
    scheduler = get_scheduler("constant_with_warmup" if config.scheduler == "constant" else config.scheduler,
                              optimizer, num_warmup_steps=warmup_steps(config.warmup_ratio, total_steps),
                              num_training_steps=total_steps)
    run.model.train()
    losses, examples = [], 0
    start = time.perf_counter()
    with tqdm(total=total_steps, desc=f"finetune {run.task.name}", unit="step", disable=None) as bar:
        for batches in epochs:
            for indices in batches:
                losses.append(train_step(run, collate(run, indices, features), optimizer, scheduler))
                examples += len(indices)
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    seconds = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]
    return {"train_seconds": seconds, "train_examples": examples, "steps": total_steps,
            "final_loss": sum(tail) / len(tail) if tail else None}


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(run: Run, split: str) -> list:
    """Model outputs for every feature of a split, in the split's order, as the task type
    makes them: a label id, a score (regression) or the predicted tag id of each word of a
    chunk (token tasks)."""
    features = run.features[split]
    kind = run.task.task_type
    run.model.eval()
    outputs: list = [None] * len(features)
    lengths = [len(f["input_ids"]) for f in features]
    for indices in sorted_batches(lengths, run.config.eval_batch_size, eval_token_budget(run.config, run.device)):
        batch = collate(run, indices, features)
        batch.pop("labels", None)
        with autocast(run):
            logits = run.model(**batch).logits.float()
        values = kind.predictions(logits, [features[i] for i in indices], run.target_scale)
        for i, value in zip(indices, values):
            outputs[i] = value
    return outputs


def evaluate_split(run: Run, split: str) -> dict[str, float]:
    """Scores of one labelled split through the task's shipped `evaluate` metric module."""
    task = run.task
    predictions, references = task.task_type.metric_inputs(task, split, run.features[split], predict(run, split))
    return compute_metric(task.info["metric"], task.info["metric_config"], predictions, references)


def labelled_splits(task: Task, role: str) -> list[str]:
    has = task.info.get("has_labels", {})
    label_column = task.task_type.label_column
    return [s for s in task.splits_with_role(role)
            if has.get(s, label_column in task.splits[s].column_names)]


def evaluate_role(run: Run, role: str) -> tuple[dict | None, int]:
    """Scores of the dev (or test) splits: {metric: value}, or {split: {metric: value}} when
    there are several (MNLI matched / mismatched); None when no split has labels."""
    splits = labelled_splits(run.task, role)
    scores = {split: evaluate_split(run, split) for split in splits}
    examples = sum(len(run.features[s]) for s in splits)
    if not scores:
        return None, 0
    return (next(iter(scores.values())) if len(scores) == 1 else scores), examples


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
def main_score(dev: dict, metric: str) -> float:
    """The dev main metric; with several dev sets, the first (MNLI: matched)."""
    first = dev if all(not isinstance(v, dict) for v in dev.values()) else next(iter(dev.values()))
    return first[metric]


def save_outputs(run: Run, train_stats: dict, dev: dict, test: dict | None, eval_seconds: float,
                 eval_examples: int) -> dict:
    """Write metrics.json (atomically) and, with --save-model, the fine-tuned model dir."""
    config = run.config
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    if config.save_model:
        with atomic_directory(output / "model") as tmp:
            run.model.save_pretrained(tmp)
            run.tokenizer.save_pretrained(tmp)
    counts = count_parameters(run.model)
    resolved = config.resolved()
    metrics = {
        "model": config.name,
        "model_dir": config.model,
        "task": run.task.name,
        "task_type": run.task.type,
        "mode": config.mode,
        "lr": config.lr,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "max_length": config.max_length,
        "dev": dev,
        "test": test,
        "main_metric": run.task.info["main_metric"],
        "main_value": main_score(dev, run.task.info["main_metric"]),
        "trainable_params": counts["trainable"],
        "total_params": counts["total"],
        "unique_params": counts["unique"],
        "train_seconds": train_stats["train_seconds"],
        "eval_seconds": eval_seconds,
        "train_examples_per_second": train_stats["train_examples"] / max(train_stats["train_seconds"], 1e-9),
        "eval_examples_per_second": eval_examples / max(eval_seconds, 1e-9),
        "train_steps": train_stats["steps"],
        "final_train_loss": train_stats["final_loss"],
        "device": str(run.device),
        "config_hash": config_hash(resolved),
        "config": resolved,
        "workflow": config.provenance,
    }
    # NaN (e.g. Pearson of constant predictions) is written as JSON NaN, which Python reads back
    write_json_atomic(output / "metrics.json", metrics)
    return metrics


def finetune(config: FinetuneConfig) -> dict:
    """Set up, train, evaluate on dev (and labelled test splits), save; returns the metrics."""
    run = setup(config)
    if "train" not in run.features or not labelled_splits(run.task, "dev"):
        raise ConfigError(f"--task {config.task}: needs a labelled train split and a labelled dev split")
    train_stats = train(run)
    start = time.perf_counter()
    dev, dev_examples = evaluate_role(run, "dev")
    test, test_examples = evaluate_role(run, "test")
    eval_seconds = time.perf_counter() - start
    return save_outputs(run, train_stats, dev, test, eval_seconds, dev_examples + test_examples)
