"""`minialbert distill`, `pretrain-teacher` and `init-scratch`: a typed config -> a model dir.

    minialbert distill --config FILE --output DIR            teacher -> MiniALBERT student
    minialbert pretrain-teacher --config FILE --output DIR   BERT masked LM from scratch
    minialbert init-scratch --config FILE --output DIR       the same BERT, untrained
    minialbert init-student --config FILE --output DIR       the student distill starts from

The config files are YAML in the shape of `minialbert.configs.DistillConfig`,
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

from minialbert.configs import (
    DistillConfig,
    InitStudentConfig,
    PretrainTeacherConfig,
    ScratchModelConfig,
    Section,
    StudentConfig,
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


def build_student(spec: StudentConfig, teacher, layer_map: list[int] | None = None, *, seed: int):
    """A new MiniAlbertForMaskedLM for the student section, initialised with `seed`: null sizes
    are the teacher's; with `init_from_teacher` (or SVD-initialised LoRA) its layers, and its
    embeddings and MLM head, come from the teacher (see `minialbert.student_init`).
    `layer_map`: the teacher layer of each recursion (null: uniform)."""
    from minialbert.configuration import MiniAlbertConfig
    from minialbert.distillation import check_layer_map
    from minialbert.modeling import MiniAlbertForMaskedLM
    from minialbert.parameters import init_embeddings_from
    from minialbert.student_init import check_compatible, copy_mlm_head, init_layers_from_teacher

    tc = teacher.config
    relax = spec.relaxation
    svd = bool(relax.lora_rank) and relax.lora_init == "svd"
    copy_embeddings = spec.init_from_teacher is not None and not spec.embeddings_from
    hidden = spec.hidden_size or tc.hidden_size
    if copy_embeddings and spec.embedding_size not in (None, tc.hidden_size):
        raise ConfigError(f"student.embedding_size: init_from_teacher copies the teacher's embeddings, so E must "
                          f"be the teacher's H ({tc.hidden_size}); got {spec.embedding_size} (leave it null)")
    try:
        config = MiniAlbertConfig(
            vocab_size=tc.vocab_size,
            embedding_size=spec.embedding_size or (tc.hidden_size if copy_embeddings else 128),
            hidden_size=hidden,
            num_hidden_layers=spec.num_recursions,
            num_attention_heads=spec.num_attention_heads or tc.num_attention_heads,
            intermediate_size=spec.intermediate_size or tc.intermediate_size,
            hidden_act=spec.hidden_act,
            hidden_dropout_prob=spec.hidden_dropout_prob,
            attention_probs_dropout_prob=spec.attention_probs_dropout_prob,
            max_position_embeddings=tc.max_position_embeddings,
            type_vocab_size=getattr(tc, "type_vocab_size", 2),
            layer_norm_eps=getattr(tc, "layer_norm_eps", 1e-12) if copy_embeddings or svd else 1e-12,
            use_adapter=spec.use_adapter,
            reduction_factor=spec.reduction_factor,
            unique_layers=spec.unique_layers,
            sharing=spec.sharing,
            lora_rank=relax.lora_rank,
            lora_alpha=relax.lora_alpha,
            lora_targets=list(relax.lora_targets),
            relax_norms=relax.norms,
            relax_biases=relax.biases,
            pad_token_id=getattr(tc, "pad_token_id", 0) or 0,
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"student: {e}") from None
    if spec.init_from_teacher or svd:
        check_compatible(config, tc, "student.init_from_teacher" if spec.init_from_teacher
                         else "student.relaxation.lora_init: svd")
    try:
        layer_map = check_layer_map(layer_map, config.num_hidden_layers, tc.num_hidden_layers)
    except ValueError as e:
        raise ConfigError(f"loss.layer_map: {e}") from None
    set_seed(seed)
    model = MiniAlbertForMaskedLM(config)
    if spec.init_from_teacher or svd:
        init_layers_from_teacher(model, teacher, method=spec.init_from_teacher, layer_map=layer_map,
                                 lora_init=relax.lora_init)
    if spec.init_from_teacher:
        # start as close to the teacher as the architecture allows: adapters add nothing yet
        for adapter in (*(model.minialbert.att_adapters or ()), *(model.minialbert.ffn_adapters or ())):
            adapter.init_near_identity(config.initializer_range)
        copy_mlm_head(model, teacher)
    source = spec.embeddings_from or (teacher if copy_embeddings else None)
    if source is not None:
        try:
            init_embeddings_from(model, source)
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

    teacher = load_teacher_for(cfg.teacher, tokenizer)
    student = build_student(cfg.student, teacher, cfg.loss.layer_map, seed=cfg.training.seed)
    record_resolved_sizes(cfg.student, student.config)
    weights = cfg.loss.weights.to_dict()
    try:
        if not is_baseline(weights):
            cfg.loss.layer_map = check_layer_map(cfg.loss.layer_map, student.config.num_hidden_layers,
                                                 teacher.config.num_hidden_layers)
        module = DistillationModule(student, teacher, layer_map=cfg.loss.layer_map, weights=weights,
                                    temperature=cfg.loss.temperature, relation=cfg.loss.relation.to_dict())
    except ValueError as e:
        raise ConfigError(f"loss: {e}") from None
    return student, module


def record_resolved_sizes(spec: StudentConfig, config) -> None:
    """Write the sizes the student section's nulls resolved to back into it (metrics.json)."""
    spec.hidden_size, spec.num_attention_heads = config.hidden_size, config.num_attention_heads
    spec.intermediate_size, spec.embedding_size = config.intermediate_size, config.embedding_size


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
    tokenizer = load_tokenizer(cfg.tokenizer, "tokenizer")
    set_seed(cfg.seed)
    return save_untrained(build_teacher(tokenizer, cfg.model), tokenizer, output, cfg, seed=cfg.seed)


def init_student(cfg: InitStudentConfig, output: str | os.PathLike) -> dict[str, Any]:
    """Save the student exactly as `distill` with this config starts from, with the teacher's
    (or the configured) tokenizer, as OUTPUT/model."""
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.teacher, "tokenizer" if cfg.tokenizer else "teacher")
    teacher = load_teacher_for(cfg.teacher, tokenizer)
    seed = cfg.resolved_seed()
    student = build_student(cfg.student, teacher, cfg.loss.layer_map, seed=seed)
    record_resolved_sizes(cfg.student, student.config)
    return save_untrained(student, tokenizer, output, cfg, seed=seed)


def save_untrained(model, tokenizer, output: str | os.PathLike, cfg: Section, *, seed: int) -> dict[str, Any]:
    """OUTPUT/model (model + tokenizer) and OUTPUT/metrics.json, all or nothing."""
    from minialbert.adapters import count_parameters
    from minialbert.utils import atomic_directory, write_json_atomic

    metrics = {"steps": 0, "seed": seed, "parameters": count_parameters(model.base_model), "config": cfg.to_dict()}
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
