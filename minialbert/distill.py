"""`minialbert distill`, `pretrain-teacher` and `init-teacher`: config -> job -> the shared training loop.

distill --config FILE --output DIR   (YAML; defaults shown)
    teacher: <model dir or hub name>        # a masked-LM teacher (BERT family)
    windows: <windows dir>                  # datasets save_to_disk: input_ids, attention_mask, ...
    tokenizer: null                         # default: the teacher's
    student:
      num_recursions: 6
      embedding_size: 128
      hidden_size: null                     # null: the teacher's
      num_attention_heads: null             # null: the teacher's
      intermediate_size: null               # null: the teacher's
      hidden_act: gelu
      use_adapter: true
      reduction_factor: 16
      hidden_dropout_prob: 0.1
      attention_probs_dropout_prob: 0.1
      embeddings_from: null                 # model dir / hub name: copy its embeddings (E from it)
    loss:
      layer_map: null                       # null: uniform, teacher layer (i+1)*T/S - 1 (0-based)
      weights: {mlm: 1, attention: 3, hidden: 3, output: 5, embedding: 0}   # only mlm > 0: baseline, no teacher
      temperature: 1.0
    training: see minialbert.training.TRAINING_DEFAULTS

pretrain-teacher --config FILE --output DIR
    tokenizer: <dir>   windows: <dir>
    model: {hidden_size: 256, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 1024,
            max_position_embeddings: 512}
    training: as above

init-teacher --config FILE --output DIR
    tokenizer: <dir>   model: as above   seed: 0
    the same BERT, randomly initialised and not trained: the "trained on the task only"
    reference row (the demo's `scratch`). Writes DIR/model and DIR/metrics.json.

distill and pretrain-teacher write DIR/model (save_pretrained + tokenizer files), DIR/metrics.json, DIR/train_log.jsonl;
checkpoints go to training.checkpoint_dir (default DIR/checkpoints). Run unchanged under
`torchrun --nproc_per_node N minialbert distill ...` for DDP.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from minialbert.utils import ConfigError, load_yaml, set_seed

STUDENT_DEFAULTS: dict[str, Any] = {
    "num_recursions": 6,
    "embedding_size": 128,
    "hidden_size": None,
    "num_attention_heads": None,
    "intermediate_size": None,
    "hidden_act": "gelu",
    "use_adapter": True,
    "reduction_factor": 16,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "embeddings_from": None,
}
LOSS_DEFAULTS: dict[str, Any] = {"layer_map": None, "weights": None, "temperature": 1.0}
TEACHER_MODEL_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 512,
}


# ----------------------------------------------------------------------------------------
# config resolution


def _section(cfg: Mapping[str, Any], key: str, defaults: Mapping[str, Any], where: str) -> dict[str, Any]:
    raw = cfg.get(key) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: {key}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise ConfigError(f"{where}: {key}.{unknown[0]}: unknown key (known: {', '.join(defaults)})")
    return {**copy.deepcopy(dict(defaults)), **raw}


def _require_str(cfg: Mapping[str, Any], key: str, where: str, optional: bool = False) -> str | None:
    value = cfg.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key}: expected a path or hub name, got {value!r}")
    return value


def _check_top(cfg: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown top-level key (known: {', '.join(allowed)})")


def _positive_int_or_null(section: str, d: Mapping[str, Any], key: str, where: str) -> None:
    v = d[key]
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ConfigError(f"{where}: {section}.{key}: expected a positive integer or null, got {v!r}")


def resolve_distill_config(raw: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate a distill config and fill in defaults (teacher-derived sizes are filled later)."""
    from minialbert.distillation import resolve_weights
    from minialbert.training import resolve_training_config

    _check_top(raw, ("teacher", "windows", "tokenizer", "student", "loss", "training"), where)
    cfg: dict[str, Any] = {
        "teacher": _require_str(raw, "teacher", where),
        "windows": _require_str(raw, "windows", where),
        "tokenizer": _require_str(raw, "tokenizer", where, optional=True),
    }
    student = _section(raw, "student", STUDENT_DEFAULTS, where)
    for key in ("num_recursions", "embedding_size", "hidden_size", "num_attention_heads", "intermediate_size",
                "reduction_factor"):
        _positive_int_or_null("student", student, key, where)
    for key in ("num_recursions", "embedding_size", "reduction_factor"):
        if student[key] is None:
            raise ConfigError(f"{where}: student.{key}: expected a positive integer, got null")
    if not isinstance(student["use_adapter"], bool):
        raise ConfigError(f"{where}: student.use_adapter: expected true or false, got {student['use_adapter']!r}")
    if not isinstance(student["hidden_act"], str):
        raise ConfigError(f"{where}: student.hidden_act: expected an activation name, got {student['hidden_act']!r}")
    if student["embeddings_from"] is not None and not isinstance(student["embeddings_from"], str):
        raise ConfigError(f"{where}: student.embeddings_from: expected a model dir or hub name, got "
                          f"{student['embeddings_from']!r}")
    loss = _section(raw, "loss", LOSS_DEFAULTS, where)
    try:
        loss["weights"] = resolve_weights(loss["weights"])
    except ValueError as e:
        raise ConfigError(f"{where}: loss.weights: {e}") from None
    t = loss["temperature"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
        raise ConfigError(f"{where}: loss.temperature: expected a number > 0, got {t!r}")
    loss["temperature"] = float(t)
    lm = loss["layer_map"]
    if lm is not None and (not isinstance(lm, list) or not all(isinstance(j, int) and not isinstance(j, bool)
                                                               for j in lm)):
        raise ConfigError(f"{where}: loss.layer_map: expected null or a list of 0-based teacher layer indices, "
                          f"got {lm!r}")
    cfg["student"], cfg["loss"] = student, loss
    cfg["training"] = resolve_training_config(raw.get("training"), where)
    return cfg


def _teacher_model_section(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    model = _section(raw, "model", TEACHER_MODEL_DEFAULTS, where)
    for key in TEACHER_MODEL_DEFAULTS:
        _positive_int_or_null("model", model, key, where)
        if model[key] is None:
            raise ConfigError(f"{where}: model.{key}: expected a positive integer, got null")
    if model["hidden_size"] % model["num_attention_heads"]:
        raise ConfigError(f"{where}: model.num_attention_heads: must divide model.hidden_size "
                          f"({model['hidden_size']}), got {model['num_attention_heads']}")
    return model


def resolve_pretrain_config(raw: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate a pretrain-teacher config and fill in defaults."""
    from minialbert.training import resolve_training_config

    _check_top(raw, ("tokenizer", "windows", "model", "training"), where)
    return {
        "tokenizer": _require_str(raw, "tokenizer", where),
        "windows": _require_str(raw, "windows", where),
        "model": _teacher_model_section(raw, where),
        "training": resolve_training_config(raw.get("training"), where),
    }


def resolve_init_config(raw: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """Validate an init-teacher config (tokenizer, model, seed) and fill in defaults."""
    _check_top(raw, ("tokenizer", "model", "seed"), where)
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: seed: expected an integer, got {seed!r}")
    return {"tokenizer": _require_str(raw, "tokenizer", where), "model": _teacher_model_section(raw, where),
            "seed": seed}


# ----------------------------------------------------------------------------------------
# loading


def _load_tokenizer(source: str, where: str, key: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 - OSError/ValueError/hub errors
        raise ConfigError(f"{where}: {key}: cannot load a tokenizer from {source!r} ({e})") from None
    if tok.mask_token is None:
        raise ConfigError(f"{where}: {key}: tokenizer at {source!r} has no mask token (needed for MLM)")
    return tok


def _load_teacher(source: str, where: str):
    from transformers import AutoModelForMaskedLM

    try:
        return AutoModelForMaskedLM.from_pretrained(source)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"{where}: teacher: cannot load a masked-LM model from {source!r} ({e})") from None


def build_student(spec: Mapping[str, Any], teacher_config, where: str = "config"):
    """A fresh MiniAlbertForMaskedLM for `spec` (student section), sizes defaulting to the teacher's."""
    import minialbert

    fields = dict(
        vocab_size=teacher_config.vocab_size,
        embedding_size=spec["embedding_size"],
        hidden_size=spec["hidden_size"] or teacher_config.hidden_size,
        num_hidden_layers=spec["num_recursions"],
        num_attention_heads=spec["num_attention_heads"] or teacher_config.num_attention_heads,
        intermediate_size=spec["intermediate_size"] or teacher_config.intermediate_size,
        hidden_act=spec["hidden_act"],
        hidden_dropout_prob=spec["hidden_dropout_prob"],
        attention_probs_dropout_prob=spec["attention_probs_dropout_prob"],
        max_position_embeddings=teacher_config.max_position_embeddings,
        type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
        use_adapter=spec["use_adapter"],
        reduction_factor=spec["reduction_factor"],
        pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
    )
    try:
        config = minialbert.MiniAlbertConfig(**fields)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: student: {e}") from None
    model = minialbert.MiniAlbertForMaskedLM(config)
    if spec["embeddings_from"]:
        try:
            minialbert.init_embeddings_from(model, spec["embeddings_from"])
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"{where}: student.embeddings_from: {e}") from None
    return model


# ----------------------------------------------------------------------------------------
# commands


def run_distill(config_path: str | Path, output: str | Path) -> dict[str, Any]:
    """Distil a student as configured in `config_path` into `output`; returns the metrics."""
    from minialbert.distillation import DistillationModule, check_layer_map
    from minialbert.training import TrainingJob, load_windows, setup_runtime, shutdown_runtime, train

    where = str(config_path)
    cfg = resolve_distill_config(load_yaml(config_path), where)
    runtime = setup_runtime(cfg["training"])
    try:
        tokenizer = _load_tokenizer(cfg["tokenizer"] or cfg["teacher"], where, "tokenizer" if cfg["tokenizer"]
                                    else "teacher")
        dataset = load_windows(cfg["windows"], where)
        teacher = _load_teacher(cfg["teacher"], where)
        if len(tokenizer) > teacher.config.vocab_size:
            raise ConfigError(f"{where}: tokenizer: {len(tokenizer)} tokens, more than the teacher's vocabulary "
                              f"({teacher.config.vocab_size})")
        set_seed(cfg["training"]["seed"])
        student = build_student(cfg["student"], teacher.config, where)
        # Record what the nulls resolved to, so the hash names the real student.
        sc = student.config
        cfg["student"].update(hidden_size=sc.hidden_size, num_attention_heads=sc.num_attention_heads,
                              intermediate_size=sc.intermediate_size)
        weights = cfg["loss"]["weights"]
        try:
            if any(weights[k] > 0 for k in ("attention", "hidden", "output", "embedding")):
                cfg["loss"]["layer_map"] = check_layer_map(cfg["loss"]["layer_map"], sc.num_hidden_layers,
                                                           teacher.config.num_hidden_layers)
            module = DistillationModule(student, teacher, layer_map=cfg["loss"]["layer_map"], weights=weights,
                                        temperature=cfg["loss"]["temperature"])
        except ValueError as e:
            raise ConfigError(f"{where}: loss: {e}") from None

        def save_model(dst: Path) -> None:
            student.save_pretrained(dst, safe_serialization=True)
            tokenizer.save_pretrained(dst)

        job = TrainingJob(module=module, compute_losses=lambda m, batch: m(batch), save_model=save_model,
                          dataset=dataset, tokenizer=tokenizer,
                          to_device=None if module.teacher is None else (lambda d: module.teacher.to(d)))
        return train(job, cfg["training"], output_dir=output, run_config=cfg, runtime=runtime)
    finally:
        shutdown_runtime()


def build_teacher(tokenizer, m: Mapping[str, int]):
    """A randomly initialised BERT masked LM of the configured shape over the tokenizer's vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(
        vocab_size=len(tokenizer), hidden_size=m["hidden_size"], num_hidden_layers=m["num_hidden_layers"],
        num_attention_heads=m["num_attention_heads"], intermediate_size=m["intermediate_size"],
        max_position_embeddings=m["max_position_embeddings"], pad_token_id=tokenizer.pad_token_id or 0,
    ))


def run_pretrain_teacher(config_path: str | Path, output: str | Path) -> dict[str, Any]:
    """Pre-train a BERT masked-LM teacher from scratch as configured; returns the metrics."""
    from minialbert.distillation import DistillationModule
    from minialbert.training import TrainingJob, load_windows, setup_runtime, shutdown_runtime, train

    where = str(config_path)
    cfg = resolve_pretrain_config(load_yaml(config_path), where)
    runtime = setup_runtime(cfg["training"])
    try:
        tokenizer = _load_tokenizer(cfg["tokenizer"], where, "tokenizer")
        dataset = load_windows(cfg["windows"], where)
        set_seed(cfg["training"]["seed"])
        model = build_teacher(tokenizer, cfg["model"])
        mlm_only = {"mlm": 1.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "embedding": 0.0}

        def save_model(dst: Path) -> None:
            model.save_pretrained(dst, safe_serialization=True)
            tokenizer.save_pretrained(dst)

        # The MLM-only objective of distillation (no teacher): the vocabulary head runs at masked positions only.
        module = DistillationModule(model, None, weights=mlm_only)
        job = TrainingJob(module=module, compute_losses=lambda m, batch: m(batch), save_model=save_model,
                          dataset=dataset, tokenizer=tokenizer)
        return train(job, cfg["training"], output_dir=output, run_config=cfg, runtime=runtime)
    finally:
        shutdown_runtime()


def run_init_teacher(config_path: str | Path, output: str | Path) -> dict[str, Any]:
    """Save the configured BERT randomly initialised (seeded), untrained, as OUTPUT/model."""
    from minialbert.parameters import count_parameters
    from minialbert.utils import atomic_directory, write_json_atomic

    where = str(config_path)
    cfg = resolve_init_config(load_yaml(config_path), where)
    tokenizer = _load_tokenizer(cfg["tokenizer"], where, "tokenizer")
    set_seed(cfg["seed"])
    model = build_teacher(tokenizer, cfg["model"])
    metrics = {"steps": 0, "seed": cfg["seed"], "parameters": count_parameters(model.base_model), "config": cfg}
    with atomic_directory(output) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        write_json_atomic(tmp / "metrics.json", metrics)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see `minialbert.distill` for the schema)")
    parser.add_argument("--output", required=True,
                        help="output dir: model/, metrics.json (and train_log.jsonl when training)")


def run(args: argparse.Namespace) -> int:
    from minialbert.training import NonFiniteLossError, TrainingInterrupted

    command = getattr(args, "command", "distill")
    fn = {"pretrain-teacher": run_pretrain_teacher, "init-teacher": run_init_teacher}.get(command, run_distill)
    try:
        metrics = fn(args.config, args.output)
    except NonFiniteLossError as e:
        print(f"minialbert {command}: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"minialbert {command}: {e}", file=sys.stderr)
        return 143
    if os.environ.get("RANK", "0") == "0":
        loss = f", total loss {metrics['total']:.4f}" if "total" in metrics else ""
        print(f"minialbert {command}: wrote {Path(args.output) / 'model'} ({metrics['steps']} steps{loss})")
    return 0
