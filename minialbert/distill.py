"""`minialbert distill`, `pretrain-teacher` and `init-scratch`: a typed config -> a model dir.

    minialbert distill --config FILE --output DIR            teacher -> MiniALBERT student
    minialbert pretrain-teacher --config FILE --output DIR   BERT masked LM from scratch
    minialbert init-scratch --config FILE --output DIR       the same BERT, untrained

The config files are YAML in the shape of `minialbert.configs.DistillConfig`,
`PretrainTeacherConfig` and `ScratchModelConfig` (`minialbert COMMAND --help` lists every key
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

from minialbert.configs import DistillConfig, PretrainTeacherConfig, ScratchModelConfig, Section, StudentConfig
from minialbert.utils import ConfigError, load_yaml, set_seed

CONFIGS: dict[str, type[Section]] = {
    "distill": DistillConfig,
    "pretrain-teacher": PretrainTeacherConfig,
    "init-scratch": ScratchModelConfig,
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


def build_student(spec: StudentConfig, teacher_config):
    """A fresh MiniAlbertForMaskedLM for the student section, null sizes taken from the teacher."""
    from minialbert.configuration import MiniAlbertConfig
    from minialbert.modeling import MiniAlbertForMaskedLM
    from minialbert.parameters import init_embeddings_from

    try:
        config = MiniAlbertConfig(
            vocab_size=teacher_config.vocab_size,
            embedding_size=spec.embedding_size,
            hidden_size=spec.hidden_size or teacher_config.hidden_size,
            num_hidden_layers=spec.num_recursions,
            num_attention_heads=spec.num_attention_heads or teacher_config.num_attention_heads,
            intermediate_size=spec.intermediate_size or teacher_config.intermediate_size,
            hidden_act=spec.hidden_act,
            hidden_dropout_prob=spec.hidden_dropout_prob,
            attention_probs_dropout_prob=spec.attention_probs_dropout_prob,
            max_position_embeddings=teacher_config.max_position_embeddings,
            type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
            use_adapter=spec.use_adapter,
            reduction_factor=spec.reduction_factor,
            pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"student: {e}") from None
    model = MiniAlbertForMaskedLM(config)
    if spec.embeddings_from:
        try:
            init_embeddings_from(model, spec.embeddings_from)
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(f"student.embeddings_from: {e}") from None
    return model


def build_teacher(tokenizer, shape):
    """A randomly initialised BERT masked LM of the configured shape over the tokenizer's vocabulary."""
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(
        vocab_size=len(tokenizer), hidden_size=shape.hidden_size, num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads, intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings, pad_token_id=tokenizer.pad_token_id or 0,
    ))


def distillation_setup(cfg: DistillConfig, tokenizer):
    """(the student, its objective) for a distill config; records the sizes the nulls resolved to."""
    from minialbert.distillation import DistillationModule, check_layer_map, is_baseline

    teacher = load_teacher(cfg.teacher)
    if len(tokenizer) > teacher.config.vocab_size:
        raise ConfigError(f"tokenizer: {len(tokenizer)} tokens, more than the teacher's vocabulary "
                          f"({teacher.config.vocab_size})")
    set_seed(cfg.training.seed)
    student = build_student(cfg.student, teacher.config)
    sc = student.config
    cfg.student.hidden_size, cfg.student.num_attention_heads = sc.hidden_size, sc.num_attention_heads
    cfg.student.intermediate_size = sc.intermediate_size
    weights = cfg.loss.weights.to_dict()
    try:
        if not is_baseline(weights):
            cfg.loss.layer_map = check_layer_map(cfg.loss.layer_map, sc.num_hidden_layers,
                                                 teacher.config.num_hidden_layers)
        module = DistillationModule(student, teacher, layer_map=cfg.loss.layer_map, weights=weights,
                                    temperature=cfg.loss.temperature)
    except ValueError as e:
        raise ConfigError(f"loss: {e}") from None
    return student, module


def pretraining_setup(cfg: PretrainTeacherConfig, tokenizer):
    """(a fresh BERT, the MLM-only objective: the vocabulary head runs at masked positions only)."""
    from minialbert.distillation import DistillationModule

    set_seed(cfg.training.seed)
    model = build_teacher(tokenizer, cfg.model)
    mlm_only = {"mlm": 1.0, "attention": 0.0, "hidden": 0.0, "output": 0.0, "embedding": 0.0}
    return model, DistillationModule(model, None, weights=mlm_only)


# ----------------------------------------------------------------------------------------
# commands


def train_model(cfg: DistillConfig | PretrainTeacherConfig, output: str | os.PathLike) -> dict[str, Any]:
    """The runner of distill and pretrain-teacher: data, model and objective -> the training loop."""
    from minialbert.data.mlm import load_windows
    from minialbert.training import TrainingJob, setup_runtime, shutdown_runtime, train

    training = cfg.training.to_dict()
    runtime = setup_runtime(training)
    try:
        tokenizer_source = cfg.tokenizer or getattr(cfg, "teacher", None)
        tokenizer = load_tokenizer(tokenizer_source, "tokenizer" if cfg.tokenizer else "teacher")
        dataset = load_windows(cfg.windows, "windows")
        setup = distillation_setup if isinstance(cfg, DistillConfig) else pretraining_setup
        model, module = setup(cfg, tokenizer)

        def save_model(dst: Path) -> None:
            model.save_pretrained(dst, safe_serialization=True)
            tokenizer.save_pretrained(dst)

        teacher = getattr(module, "teacher", None)
        job = TrainingJob(module=module, compute_losses=lambda m, batch: m(batch), save_model=save_model,
                          dataset=dataset, tokenizer=tokenizer,
                          to_device=None if teacher is None else (lambda d: teacher.to(d)))
        return train(job, training, output_dir=output, run_config=cfg.to_dict(), runtime=runtime)
    finally:
        shutdown_runtime()


def init_scratch(cfg: ScratchModelConfig, output: str | os.PathLike) -> dict[str, Any]:
    """Save the configured BERT randomly initialised (seeded), untrained, as OUTPUT/model."""
    from minialbert.adapters import count_parameters
    from minialbert.utils import atomic_directory, write_json_atomic

    tokenizer = load_tokenizer(cfg.tokenizer, "tokenizer")
    set_seed(cfg.seed)
    model = build_teacher(tokenizer, cfg.model)
    metrics = {"steps": 0, "seed": cfg.seed, "parameters": count_parameters(model.base_model),
               "config": cfg.to_dict()}
    with atomic_directory(output) as tmp:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "model")
        write_json_atomic(tmp / "metrics.json", metrics)
    return metrics


def run_command(command: str, config_path: str | os.PathLike, output: str | os.PathLike) -> int:
    """Run one of the three commands on a config file; the exit status (0, 1 NaN loss, 143 SIGTERM)."""
    cfg = load_config(command, config_path)  # before any heavy import: a bad config fails at once
    from minialbert.training import NonFiniteLossError, TrainingInterrupted

    try:
        if command == "init-scratch":
            metrics = init_scratch(cfg, output)
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
