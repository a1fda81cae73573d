"""`minialbert predict`: a fine-tuned model's predictions on one split of a task, one JSON line
per example: {"id", "prediction", "exit_recursion"}.

A MiniALBERT model fine-tuned with exits can stop early: `--exit-epsilon E` uses the threshold
its run calibrated for E (stored in the model config), `--exit-threshold T` any confidence
threshold; without either it runs at full depth. Batches go through the batch-shrinking
executor (`minialbert.exits.run_exits`), so `--batch-size 1` and `--batch-size 32` give the same
predictions and exit recursions.

    minialbert predict --model results/finetune/<model>/<task>/<mode>/<run>/model \\
        --task results/tasks/<task> --split test --exit-epsilon 0.05 --output preds.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from minialbert.utils import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="fine-tuned model dir (with its tokenizer)")
    parser.add_argument("--task", required=True, help="prepared task dir or task spec file")
    parser.add_argument("--split", required=True, help="split to predict (e.g. dev, test)")
    rule = parser.add_mutually_exclusive_group()
    rule.add_argument("--exit-epsilon", type=float, help="stop early with the threshold calibrated for this "
                                                         "target disagreement rate (a run with exits)")
    rule.add_argument("--exit-threshold", type=float, help="stop early when the stop score reaches this")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per batch (default: 32)")
    parser.add_argument("--max-length", type=int, default=128, help="max tokens per example (default: 128)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--output", required=True, help="the JSON lines file to write")


def exit_rule(model, epsilon: float | None, threshold: float | None, where: str):
    """The ExitRule of the flags: full depth, a given threshold, or the run's calibrated one."""
    from minialbert import exits

    if epsilon is None and threshold is None:
        return exits.ExitRule("full")
    exits.check_exit_model(model, where)
    if epsilon is not None:
        stored = model.config.exit_thresholds or {}
        key = next((k for k in stored if math.isclose(float(k), epsilon)), None)
        if key is None:
            raise ConfigError(f"--exit-epsilon {epsilon}: {where} has thresholds for epsilon "
                              f"{sorted(stored) or 'none'} only")
        threshold = stored[key]
        if threshold is None:  # nothing was certified for this epsilon: full depth
            return exits.ExitRule("full")
    return exits.ExitRule("confidence", threshold=float(threshold))


def run(args: argparse.Namespace) -> int:
    import torch

    from minialbert import exits
    from minialbert.finetune import load_tokenizer
    from minialbert.command_configs import FinetuneConfig
    from minialbert.tasks import load_task
    from minialbert.task_types import word_predictions

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected an integer >= 1, got {args.batch_size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task(args.task)
    if args.split not in task.splits:
        raise ConfigError(f"--split {args.split}: the task {task.name} has splits {sorted(task.splits)}")
    kind = task.task_type
    import minialbert  # noqa: F401  (registers MiniALBERT with the Auto classes)

    try:
        model = kind.auto_model_class().from_pretrained(args.model)
    except OSError as e:
        raise ConfigError(f"--model {args.model}: cannot load a model ({e})") from None
    model.eval()
    rule = exit_rule(model, args.exit_epsilon, args.exit_threshold, f"--model {args.model}")
    tokenizer = load_tokenizer(FinetuneConfig(model=args.model, task=args.task, output=args.output, lr=1.0))
    features = kind.encode(task, args.split, tokenizer, args.max_length)
    target_scale = kind.prepare_targets(kind.encode(task, "train", tokenizer, args.max_length)) \
        if "train" in task.splits else None
    collator = kind.collator(tokenizer)
    keys = ("input_ids", "attention_mask", "token_type_ids")
    recursive = hasattr(model, "minialbert") and hasattr(model.minialbert, "recursion")
    outputs, depths = [None] * len(features), [0] * len(features)
    with torch.no_grad():
        for start in range(0, len(features), args.batch_size):
            chunk = features[start:start + args.batch_size]
            batch = collator([{k: f[k] for k in keys if k in f} for f in chunk])
            batch = {k: v for k, v in batch.items() if k in keys}
            if recursive:
                mask = exits.token_mask(chunk, batch["input_ids"].shape[1])
                logits, exit_at = exits.run_exits(model, kind, batch, mask, rule, target_scale)
            else:
                full = model(**batch).logits
                logits = [full[i, :len(f["input_ids"])] if full.dim() == 3 else full[i] for i, f in enumerate(chunk)]
                exit_at = [model.config.num_hidden_layers] * len(chunk)
            for offset, (z, depth) in enumerate(zip(logits, exit_at)):
                outputs[start + offset] = kind.predictions(z.float()[None], [chunk[offset]], target_scale)[0]
                depths[start + offset] = depth
    lines = prediction_lines(task, args.split, features, outputs, depths, word_predictions)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")  # renamed when complete
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(output)
    print(f"{len(lines)} predictions ({task.name} {args.split}, mean exit recursion "
          f"{sum(line['exit_recursion'] for line in lines) / max(1, len(lines)):.2f}) -> {args.output}")
    return 0


def prediction_lines(task, split: str, features: list[dict], outputs: list, depths: list[int],
                     word_predictions) -> list[dict]:
    """One line per example of the split: label names, scores, or (token tasks) the word tags
    of the sentence, whose exit recursion is its latest chunk's."""
    if features and "sentence" in features[0]:
        tags = word_predictions(task, split, features, outputs)
        depth = [0] * len(tags)
        for feature, d in zip(features, depths):
            depth[feature["sentence"]] = max(depth[feature["sentence"]], d)
        return [{"id": i, "prediction": t, "exit_recursion": d} for i, (t, d) in enumerate(zip(tags, depth))]
    labels = task.labels
    return [{"id": i, "prediction": labels[o] if labels and isinstance(o, int) else o, "exit_recursion": d}
            for i, (o, d) in enumerate(zip(outputs, depths))]
