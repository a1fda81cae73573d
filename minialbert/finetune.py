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

from minialbert import exits
from minialbert.adapters import count_parameters, prepare_for_adapter_tuning
from minialbert.host_memory import retain_freed_memory
from minialbert.metrics import compute_metric
from minialbert.optim import build_optimizer
from minialbert.precision import Precision, choose_precision, enable_tf32
from minialbert.tasks import Task, load_task
from minialbert.command_configs import FinetuneConfig
from minialbert.utils import ConfigError, atomic_directory, config_hash, set_seed, write_json_atomic

logger = logging.getLogger(__name__)

CPU_EVAL_MAX_TOKENS = 1024  # see eval_token_budget
LOSS_SHOWN_EVERY = 50  # steps between the progress bar's loss readings (each one a host sync)


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


def shuffled_batches(count: int, batch_size: int, generator: random.Random) -> list[list[int]]:
    """The examples in a random order, cut into batches."""
    order = list(range(count))
    generator.shuffle(order)
    return [order[i:i + batch_size] for i in range(0, count, batch_size)]


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
    return {k: v.to(run.device) for k, v in pad(run, [features[i] for i in indices]).items()}


def pad(run: "Run", rows: list[dict]) -> dict[str, torch.Tensor]:
    """Examples padded dynamically into a batch on the CPU, with only what the model accepts."""
    return dict(run.collator([{k: row[k] for k in run.model_keys if k in row} for row in rows]))


def training_batches(run: "Run", batches: list[list[int]], features: list[dict]) -> Iterator[dict[str, torch.Tensor]]:
    """The batches on the device, in order: padded by a DataLoader (in pinned memory on CUDA) and
    copied without blocking, so the next batch is prepared while the GPU runs the step before."""
    loader = torch.utils.data.DataLoader(
        features, batch_sampler=batches, collate_fn=lambda rows: pad(run, rows),
        pin_memory=run.device.type == "cuda",
        # its own generator: an iterator otherwise draws a seed from the global RNG, which would
        # shift the dropout masks of every run against the same seed's
        generator=torch.Generator())
    for batch in loader:
        yield {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}


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
    precision: Precision  # the rule of minialbert.precision, like distillation's
    # What the task type's `prepare_targets` returned, for its `predictions` to map outputs
    # back to the task's scale (regression: the training targets' (mean, std)); else None.
    target_scale: Any = None
    # With exits: (the split thresholds are calibrated on, the split exits are reported on)
    exit_splits: tuple[str, str] | None = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(config: FinetuneConfig, task: Task):
    """The encoder with a fresh head sized for the task; label maps go into the model config."""
    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    kind = task.task_type
    kwargs = kind.model_kwargs(task.labels)
    if config.exits is not None:
        kwargs.update(exit_model_kwargs(config))
    try:
        # ignore_mismatched_sizes: a model dir fine-tuned on another task has a head of another size
        return kind.auto_model_class().from_pretrained(config.model, ignore_mismatched_sizes=True, **kwargs)
    except OSError as e:
        raise ConfigError(f"--model {config.model}: cannot load a model ({e})") from None
    except ValueError as e:  # the model config refused a setting (e.g. exits.min_recursion)
        raise ConfigError(f"--model {config.model}: {e}") from None


def exit_model_kwargs(config: FinetuneConfig) -> dict[str, Any]:
    """The model config settings of exits; only a MiniALBERT model (a recursive one) has them."""
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(config.model).model_type
    except (OSError, ValueError) as e:
        raise ConfigError(f"--model {config.model}: cannot read its config ({e})") from None
    if model_type != "minialbert":
        raise ConfigError(f"exits: adaptive depth needs a MiniALBERT student (a recursive model); "
                          f"--model {config.model} is a {model_type!r} model")
    return dict(exit_heads=config.exits.heads, exit_min_recursion=config.exits.min_recursion,
                exit_thresholds=None)


def exit_splits(config: FinetuneConfig, task: Task) -> tuple[str, str]:
    """(calibration split, reported split) of a run with exits. Scores are reported on the
    labelled test split when there is one, else on dev; thresholds are calibrated on a split
    never reported: dev when reporting on test, else a held-out part of train ("calibration")."""
    tests, devs = labelled_splits(task, "test"), labelled_splits(task, "dev")
    report = tests[0] if tests else devs[0]
    choice = config.exits.calibration_split
    if choice == "dev" and not tests:
        raise ConfigError(f"exits.calibration_split: dev is reported on ({task.name} has no labelled test "
                          "split); use train (a held-out part) or auto")
    if choice == "auto":
        choice = "dev" if tests else "train"
    return (devs[0] if choice == "dev" else "calibration"), report


def hold_out(features: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(kept, held out): a seeded random `fraction` of the examples (at least one) held out."""
    order = list(range(len(features)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, int(round(fraction * len(features))))])
    return [f for i, f in enumerate(features) if i not in held], [f for i, f in enumerate(features) if i in held]


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
    retain_freed_memory()
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
    splits = None
    if config.exits is not None and "train" in features and labelled_splits(task, "dev"):
        splits = exit_splits(config, task)
        if splits[0] == "calibration":  # never trained on
            features["train"], features["calibration"] = hold_out(features["train"],
                                                                  config.exits.calibration_fraction, config.seed)
    target_scale = kind.prepare_targets(features["train"])
    accepted = set(inspect.signature(model.forward).parameters)
    model_keys = tuple(k for k in MODEL_KEYS if k in accepted)  # e.g. DistilBERT takes no token_type_ids
    enable_tf32(device)
    return Run(config, task, tokenizer, model, device, features, kind.collator(tokenizer),
               model_keys, choose_precision(config.bf16, device), target_scale, splits)


def autocast(run: Run):
    return run.precision.autocast()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """The warm-up steps of a ratio of the training steps (rounded up)."""
    return int(math.ceil(warmup_ratio * total_steps))


def train_step(run: Run, batch: dict, optimizer, scheduler, scaler=None) -> torch.Tensor:
    """One optimisation step (`scaler`: fp16's GradScaler); returns the loss, on the device (no host sync)."""
    with autocast(run):
        if run.config.exits is None:
            loss = run.model(**batch).loss
        else:
            loss = exits.training_loss(run.model, run.task.task_type, batch, run.config.exits.loss)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(optimizer)  # clip the true gradients
    if run.config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], run.config.max_grad_norm)
    if scaler is not None:  # skips the update when fp16 gradients overflowed
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def epoch_batches(run: Run, rng: random.Random) -> Iterator[list[list[int]]]:
    """Each epoch's batches: shuffled, or length-grouped with `group_by_length`; a fractional
    last epoch takes a prefix of its batches."""
    lengths = [len(f["input_ids"]) for f in run.features["train"]]
    size = run.config.batch_size

    def batches() -> list[list[int]]:
        if run.config.group_by_length:
            return length_grouped_batches(lengths, size, rng)
        return shuffled_batches(len(lengths), size, rng)

    full, rest = int(run.config.epochs), run.config.epochs - int(run.config.epochs)
    for _ in range(full):
        yield batches()
    if rest > 0:
        last = batches()
        yield last[: max(1, int(round(rest * len(last))))]


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
    scaler = run.precision.grad_scaler()
    run.model.train()
    losses, examples = [], 0  # losses stay on the device: one host sync at the end, not one a step
    start = time.perf_counter()
    with tqdm(total=total_steps, desc=f"finetune {run.task.name}", unit="step", disable=None) as bar:
        for batches in epochs:
            for indices, batch in zip(batches, training_batches(run, batches, features)):
                losses.append(train_step(run, batch, optimizer, scheduler, scaler))
                examples += len(indices)
                bar.update(1)
                if len(losses) % LOSS_SHOWN_EVERY == 0:  # reading the loss waits for the device
                    bar.set_postfix(loss=f"{float(losses[-1]):.4f}", refresh=False)
    losses = torch.stack(losses).float().tolist() if losses else []  # waits for the last step
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
    kind = run.task.task_type
    run.model.eval()
    outputs: list = [None] * len(run.features[split])
    for indices, batch, rows in split_batches(run, split):
        with autocast(run):
            logits = run.model(**batch).logits.float()
        values = kind.predictions(logits, rows, run.target_scale)
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
    if config.save_model or config.exits is not None:  # `minialbert predict` runs on a run with exits
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
    if config.exits is not None:
        Path(config.output).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(config.output) / "exits.json", evaluate_exits(run))  # also sets the thresholds
    return save_outputs(run, train_stats, dev, test, eval_seconds, dev_examples + test_examples)


# --------------------------------------------------------------------------------------------
# Adaptive depth
# --------------------------------------------------------------------------------------------
def split_batches(run: Run, split: str) -> Iterator[tuple[list[int], dict, list[dict]]]:
    """(indices, model inputs without labels, features) of a split's length-sorted eval batches."""
    features = run.features[split]
    lengths = [len(f["input_ids"]) for f in features]
    for indices in sorted_batches(lengths, run.config.eval_batch_size, eval_token_budget(run.config, run.device)):
        batch = collate(run, indices, features)
        batch.pop("labels", None)
        yield indices, batch, [features[i] for i in indices]


def evaluate_exits(run: Run) -> dict:
    """Calibrate a threshold per epsilon, measure what it does on the reported split, store the
    thresholds in the model config (saved with the model) -> the content of exits.json."""
    settings, task, kind = run.config.exits, run.task, run.task.task_type
    calibration_split, report_split = run.exit_splits
    model, N = run.model, run.model.config.num_hidden_layers

    def traced(split):
        return exits.trace(model, kind, split_batches(run, split), len(run.features[split]), run.target_scale,
                           settings.tolerance)

    def score(outputs: list) -> float:
        predictions, references = kind.metric_inputs(task, report_split, run.features[report_split], outputs)
        return compute_metric(task.info["metric"], task.info["metric_config"], predictions,
                              references)[task.info["main_metric"]]

    calibration, report = traced(calibration_split), traced(report_split)
    first = report.first_recursion
    fixed = {k: score(report.outputs[k - first]) for k in range(first, N + 1)}
    result = {
        "calibration_split": (calibration_split if calibration_split != "calibration" else
                              f"train (a held-out {settings.calibration_fraction:g}, not trained on)"),
        "calibration_examples": len(run.features[calibration_split]),
        "report_split": report_split,
        "report_examples": len(run.features[report_split]),
        "main_metric": task.info["main_metric"],
        "loss": settings.loss, "heads": settings.heads, "min_recursion": settings.min_recursion,
        "delta": settings.delta, "tolerance": settings.tolerance,
        "full_depth": {"score": fixed[N], "mean_recursions": N},
        "fixed_depth": {str(k): v for k, v in fixed.items()},
        "epsilons": {},
    }
    thresholds = {}
    for epsilon in settings.epsilons:
        chosen = exits.calibrate(calibration.scores, calibration.disagree, epsilon, settings.delta)
        exit_at = report.exits_at(chosen["threshold"])
        summary = report.summary(exit_at, N)
        k = min(N, max(first, math.ceil(summary["mean_recursions"] - 1e-9)))
        finite = math.isfinite(chosen["threshold"])
        thresholds[str(epsilon)] = chosen["threshold"] if finite else None
        result["epsilons"][str(epsilon)] = {
            "threshold": chosen["threshold"] if finite else None,  # null: no threshold certified, full depth
            "calibration_agreement": chosen["calibration_agreement"],
            "test_agreement": summary["agreement"],
            "score": score(report.predictions(exit_at)),
            "mean_recursions": summary["mean_recursions"],
            "exit_histogram": summary["exit_histogram"],
            "fixed_k": k, "fixed_k_score": fixed[k],
        }
    model.config.exit_thresholds = thresholds
    return result
