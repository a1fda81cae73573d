"""`minialbert distill`, `pretrain-teacher` and `init-scratch`: a typed config -> a model dir.

    minialbert distill --config FILE --output DIR            teacher -> MiniALBERT student
    minialbert pretrain-teacher --config FILE --output DIR   BERT masked LM from scratch
    minialbert init-scratch --config FILE --output DIR       the same BERT, untrained
    minialbert init-student --config FILE --output DIR       the student distill starts from

The config files are YAML in the shape of `minialbert.command_configs.DistillConfig`,
`PretrainTeacherConfig`, `ScratchModelConfig` and `InitStudentConfig` (a distill config) (`minialbert COMMAND --help` lists every key
with its default). distill and pretrain-teacher share one runner (`run_command`): load the
data, build the model and its objective, hand both to the training loop, which writes
DIR/model, DIR/metrics.json and DIR/train_log.jsonl and checkpoints to training.checkpoint_dir
(default DIR/checkpoints). They run unchanged under `torchrun --nproc_per_node N -m
minialbert.cli distill ...` for DDP.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from minialbert.command_configs import (
    DistillConfig,
    InitStudentConfig,
    PretrainTeacherConfig,
    ScratchModelConfig,
    Section,
)
from minialbert.utils import ConfigError, load_yaml, set_seed

CONFIGS: dict[str, type[Section]] = {
    "distill": DistillConfig,
    "pretrain-teacher": PretrainTeacherConfig,
    "init-scratch": ScratchModelConfig,
    "init-student": InitStudentConfig,
}


def load_config(command: str, path: str | os.PathLike) -> Section:
    """The command's typed config from a YAML file; ConfigError names the file and the key."""
    try:
        return CONFIGS[command].from_dict(load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------------------
# loading and building models


def load_tokenizer(source: str, key: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except Exception as e:  # noqa: BLE001 - OSError/ValueError/hub errors
        raise ConfigError(f"{key}: cannot load a tokenizer from {source!r} ({e})") from None
    if tok.mask_token is None:
        raise ConfigError(f"{key}: tokenizer at {source!r} has no mask token (needed for MLM)")
    return tok


def load_teacher(source: str):
    from transformers import AutoModelForMaskedLM

    try:
        return AutoModelForMaskedLM.from_pretrained(source)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"teacher: cannot load a masked-LM model from {source!r} ({e})") from None


def load_teacher_for(source: str, tokenizer):
    """The teacher, checked to cover the tokenizer's vocabulary."""
    teacher = load_teacher(source)
    if len(tokenizer) > teacher.config.vocab_size:
        raise ConfigError(f"tokenizer: {len(tokenizer)} tokens, more than the teacher's vocabulary "
                          f"({teacher.config.vocab_size})")
    return teacher


def build_teacher(tokenizer, shape):
    """A randomly initialised BERT masked LM of the configured shape over the tokenizer's vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings, pad_token_id=tokenizer.pad_token_id or 0,
    ))


def resolve_student(cfg: DistillConfig | InitStudentConfig, teacher):
    """(the student's MiniAlbertConfig, the resolved objective) of a distill config: the layer
    map, the terms' settings and the sizes are resolved here, once, without changing `cfg`."""
    from minialbert.loss_terms import loss_config_error
    from minialbert.objective import Objective
    from minialbert.student import student_model_config

    config = student_model_config(cfg.student, teacher.config)
    try:
        objective = Objective.resolve(config, teacher, layer_map=cfg.loss.layer_map,
                                      weights=cfg.loss.weights.to_dict(), temperature=cfg.loss.temperature,
                                      options=cfg.loss.to_dict())
    except ValueError as e:
        raise loss_config_error(e) from None
    return config, objective


def resolved_record(config, objective) -> dict[str, Any]:
    """What a student config's nulls resolved to, recorded beside it in metrics.json."""
    from minialbert.student import resolved_sizes

    return {"student": resolved_sizes(config), "layer_map": objective.layer_map}


def distillation_setup(cfg: DistillConfig, tokenizer):
    """(the student, its objective as a module, what the config's nulls resolved to)."""
    from minialbert.objective import DistillationModule
    from minialbert.student import build_student

    teacher = load_teacher_for(cfg.teacher, tokenizer)
    config, objective = resolve_student(cfg, teacher)
    student = build_student(cfg.student, teacher, objective.layer_map, seed=cfg.training.seed, config=config)
    return student, DistillationModule(student, teacher, objective), resolved_record(config, objective)


def pretraining_setup(cfg: PretrainTeacherConfig, tokenizer):
    """(a fresh BERT, the objective of the terms that need no teacher (masked-LM; the vocabulary
    head runs at masked positions only), nothing resolved)."""
    from minialbert.loss_terms import teacher_free_weights
    from minialbert.objective import DistillationModule

    set_seed(cfg.training.seed)
    model = build_teacher(tokenizer, cfg.model)
    return model, DistillationModule(model, None, weights=teacher_free_weights()), None


# ----------------------------------------------------------------------------------------
# commands


def train_model(cfg: DistillConfig | PretrainTeacherConfig, output: str | os.PathLike) -> dict[str, Any]:
    """The runner of distill and pretrain-teacher: data, model and objective -> the training loop."""
    from minialbert.data.mlm import load_windows
    from minialbert.training import TrainingJob, run_training, setup_runtime, shutdown_runtime

    runtime = setup_runtime(cfg.training)
    try:
        tokenizer_source = cfg.tokenizer or getattr(cfg, "teacher", None)
        tokenizer = load_tokenizer(tokenizer_source, "tokenizer" if cfg.tokenizer else "teacher")
        dataset = load_windows(cfg.windows, "windows")
        setup = distillation_setup if isinstance(cfg, DistillConfig) else pretraining_setup
        model, module, resolved = setup(cfg, tokenizer)

        def save_model(dst: Path) -> None:
            model.save_pretrained(dst, safe_serialization=True)
            tokenizer.save_pretrained(dst)

        teacher = getattr(module, "teacher", None)
        job = TrainingJob(module=module, compute_losses=lambda m, batch: m(batch), save_model=save_model,
                          dataset=dataset, tokenizer=tokenizer,
                          to_device=None if teacher is None else (lambda d: teacher.to(d)))
        return run_training(job, cfg.training, output_dir=output, run_config=cfg.to_dict(), resolved=resolved,
                            runtime=runtime)
    finally:
        shutdown_runtime()


def init_scratch(cfg: ScratchModelConfig, output: str | os.PathLike) -> dict[str, Any]:
    """Save the configured BERT randomly initialised (seeded), untrained, as OUTPUT/model."""
    tokenizer = load_tokenizer(cfg.tokenizer, "tokenizer")
    set_seed(cfg.seed)
    return save_untrained(build_teacher(tokenizer, cfg.model), tokenizer, output, cfg, seed=cfg.seed)


def init_student(cfg: InitStudentConfig, output: str | os.PathLike) -> dict[str, Any]:
    """Save the student exactly as `distill` with this config starts from, with the teacher's
    (or the configured) tokenizer, as OUTPUT/model."""
    from minialbert.student import build_student

    tokenizer = load_tokenizer(cfg.tokenizer or cfg.teacher, "tokenizer" if cfg.tokenizer else "teacher")
    teacher = load_teacher_for(cfg.teacher, tokenizer)
    seed = cfg.resolved_seed()
    config, objective = resolve_student(cfg, teacher)
    student = build_student(cfg.student, teacher, objective.layer_map, seed=seed, config=config)
    return save_untrained(student, tokenizer, output, cfg, seed=seed, resolved=resolved_record(config, objective))


def save_untrained(model, tokenizer, output: str | os.PathLike, cfg: Section, *, seed: int,
                   resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """OUTPUT/model (model + tokenizer) and OUTPUT/metrics.json, all or nothing."""
    from minialbert.adapters import count_parameters
    from minialbert.utils import atomic_directory, write_json_atomic

    metrics = {"steps": 0, "seed": seed, "parameters": count_parameters(model.base_model), "config": cfg.to_dict()}
    if resolved is not None:
        metrics["resolved"] = resolved
    with atomic_directory(output) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        write_json_atomic(tmp / "metrics.json", metrics)
    return metrics


INITIALISERS = {"init-scratch": init_scratch, "init-student": init_student}


def run_command(command: str, config_path: str | os.PathLike, output: str | os.PathLike) -> int:
    """Run one of the three commands on a config file; the exit status (0, 1 NaN loss, 143 SIGTERM)."""
    cfg = load_config(command, config_path)  # before any heavy import: a bad config fails at once
    from minialbert.training import NonFiniteLossError, TrainingInterrupted

    try:
        if command in INITIALISERS:
            metrics = INITIALISERS[command](cfg, output)
        else:
            metrics = train_model(cfg, output)
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    except NonFiniteLossError as e:
        print(f"minialbert {command}: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"minialbert {command}: {e}", file=sys.stderr)
        return 143
    if os.environ.get("RANK", "0") == "0":
        loss = f", total loss {metrics['total']:.4f}" if "total" in metrics else ""
        print(f"minialbert {command}: wrote {Path(output) / 'model'} ({metrics['steps']} steps{loss})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.split()[-1]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "config keys (YAML) and defaults:\n" + CONFIGS[command].describe(indent=2)
    parser.add_argument("--config", required=True, help="YAML config (keys below)")
    parser.add_argument("--output", required=True,
                        help="output dir: model/, metrics.json (and train_log.jsonl when training)")


def run(args: argparse.Namespace) -> int:
    return run_command(args.command, args.config, args.output)
