"""One typed config per command: the single place where a setting is named, documented,
defaulted and validated.

Every command (`minialbert distill`, `finetune`, `make-windows`, ...) reads exactly one of the
dataclasses below, and the workflow's plan (`minialbert.workflow.plan`) builds the same
dataclass from a `config.yaml` entry when the DAG is built, so a bad value fails before any
job runs and with the same message the command would print. The workflow's JSON schema only
knows the workflow's own keys and passes each command section through to its dataclass.

This module imports neither torch nor transformers: `minialbert --help` and config errors
must answer at once.

    StudentConfig.from_dict({"num_recursions": 0}, key="student")
    -> ConfigError("student.num_recursions: expected an integer >= 1, got 0")
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, TypeVar

from minialbert.loss_terms import LOSS_TERMS, default_weights, loss_config_error, resolve_terms
from minialbert.recursions import RELAXATION_TARGETS
from minialbert.utils import ConfigError, did_you_mean, shown_value

S = TypeVar("S", bound="Section")


_SAME_NAME = "<the field's name>"


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = None, minimum: float | None = None,
           above: float | None = None, below: float | None = None, operational: bool = False,
           model: str | None = _SAME_NAME, teacher_default: bool = False) -> Any:
    """A documented config field. `minimum` is inclusive, `above`/`below` exclusive bounds;
    `operational` marks settings that change how a run is observed or stored, not what it computes.
    In a section that describes a model (`StudentConfig`), `model` is the model config attribute the
    field sets (default: the field's own name; None: not a model setting) and `teacher_default`
    makes a null take the teacher's value of that attribute (`Section.model_settings`)."""
    meta = {"doc": doc, "minimum": minimum, "above": above, "below": below, "operational": operational,
            "model": model, "teacher_default": teacher_default}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _describe_type(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) if isinstance(a, str) else str(a).lower() for a in args)
    if origin in (list, tuple):
        return f"a list of {_describe_type(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe_type(a) for a in args)
    if isinstance(tp, type) and issubclass(tp, Section):
        return "a mapping"
    return str(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` checked against the annotation `tp`; raises ConfigError naming `key`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for alternative in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, alternative, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}: expected {_describe_type(tp)}, got {shown_value(value)}")
    if isinstance(tp, type) and issubclass(tp, Section):
        return tp.from_dict(value, key=key)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str) and v != "",
    }
    if tp in ok:
        if not ok[tp](value):
            raise ConfigError(f"{key}: expected {_describe_type(tp)}, got {shown_value(value)}")
        return float(value) if tp is float else value
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) and a == value for a in args):
            raise ConfigError(f"{key}: expected {_describe_type(tp)}, got {shown_value(value)}")
        return value
    if tp is dict:  # free-form mapping, recorded as given
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {shown_value(value)}")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_describe_type(tp)}, got {shown_value(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"unsupported config annotation {tp!r}")


def _check_bounds(f: dataclasses.Field, value: Any, key: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    m = f.metadata
    if m.get("minimum") is not None and value < m["minimum"]:
        kind = "an integer" if isinstance(value, int) else "a number"
        raise ConfigError(f"{key}: expected {kind} >= {m['minimum']}, got {value!r}")
    if m.get("above") is not None and not value > m["above"]:
        raise ConfigError(f"{key}: expected a number > {m['above']}, got {value!r}")
    if m.get("below") is not None and not value < m["below"]:
        raise ConfigError(f"{key}: expected a number < {m['below']}, got {value!r}")


class Section:
    """Base of the config dataclasses: `from_dict` validates (unknown, renamed, missing and
    mistyped keys, bounds, then `check`), `to_dict` gives the resolved mapping back."""

    # old key -> what to write instead; an old key is refused with this hint
    RENAMED: ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls: type[S], raw: Mapping[str, Any] | None, key: str = "", also_allowed: tuple[str, ...] = ()) -> S:
        """Validate `raw` (None = all defaults) and build the section; errors name `key.field`.
        `also_allowed`: keys of the enclosing entry that the caller handles (listed in errors)."""
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{key or 'config'}: expected a mapping, got {raw!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        for name in raw:
            if name in cls.RENAMED:
                raise ConfigError(f"{_join(key, name)}: this key was renamed: use {cls.RENAMED[name]}")
            if name not in fields:
                allowed = [*also_allowed, *fields]
                raise ConfigError(f"{_join(key, name)}: unknown key{did_you_mean(name, allowed)} "
                                  f"(allowed: {', '.join(allowed)})")
        values = {}
        for name, f in fields.items():
            if name in raw:
                values[name] = _coerce(raw[name], hints[name], _join(key, name))
                _check_bounds(f, values[name], _join(key, name))
            elif isinstance(hints[name], type) and issubclass(hints[name], Section):
                values[name] = hints[name].from_dict(None, key=_join(key, name))  # its own checks run too
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{_join(key, name)}: missing (expected {_describe_type(hints[name])})")
        section = cls(**values)
        section.check(key)
        return section

    def check(self, key: str) -> None:
        """Cross-field rules; override. Raise ConfigError naming the key."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def describe(cls, indent: int = 0) -> str:
        """A YAML-like listing of the fields, their defaults and docs (for --help and docs)."""
        lines, pad = [], " " * indent
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            sub = typing.get_type_hints(cls)[f.name]
            if isinstance(sub, type) and issubclass(sub, Section):
                lines.append(f"{pad}{f.name}:{'  # ' + f.metadata['doc'] if f.metadata.get('doc') else ''}")
                lines.append(sub.describe(indent + 2))
                continue
            default = "<required>" if f.default is dataclasses.MISSING else _yaml_value(f.default)
            doc = f"  # {f.metadata['doc']}" if f.metadata.get("doc") else ""
            lines.append(f"{pad}{f.name}: {default}{doc}")
        return "\n".join(lines)

    def model_settings(self) -> dict[str, tuple[Any, bool]]:
        """{model config attribute: (value, null means the teacher's)} of every field that is a
        model setting, nested sections included (their fields are flat in the model config)."""
        out: dict[str, tuple[Any, bool]] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, Section):
                out.update(value.model_settings())
            elif f.metadata.get("model") is not None:
                name = f.name if f.metadata["model"] == _SAME_NAME else f.metadata["model"]
                out[name] = (list(value) if isinstance(value, list) else value, f.metadata["teacher_default"])
        return out

    @classmethod
    def operational_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("operational"))  # type: ignore


def _plain(value: Any) -> Any:
    """A section's value as plain data (nested sections as mappings, containers copied)."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _yaml_value(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


# ------------------------------------------------------------------------------------------
# training (distill, pretrain-teacher)


@dataclass(kw_only=True)
class TrainingConfig(Section):
    """The `training:` section of `distill` and `pretrain-teacher`."""

    lr: float = option(5e-4, "peak learning rate (AdamW)", above=0)
    warmup_steps: int = option(0, "linear warm-up steps, then linear decay to 0", minimum=0)
    weight_decay: float = option(0.01, "AdamW weight decay on matrices (not biases or LayerNorm)", minimum=0)
    batch_size: int = option(32, "windows per optimizer step over all processes (the global batch, as papers "
                             "state it): the same config optimises alike on 1, 2 or 4 GPUs", minimum=1)
    # operational: it splits the same global batch (same rows, same order) into other micro-batches,
    # as a different number of processes does, so a resume may lower it (say, after running out of memory)
    max_batch_per_device: int | None = option(
        None, "most windows one process takes per forward/backward; the rest of the global batch is "
        "gradient accumulation; null: batch_size / processes", minimum=1, operational=True)
    max_steps: int | None = option(None, "optimizer steps; set exactly one of max_steps and epochs", minimum=1)
    epochs: int | None = option(None, "passes over the windows; set exactly one of max_steps and epochs", minimum=1)
    seed: int = option(42, "seed of initialisation, batch order and masks", minimum=0)
    mlm_probability: float = option(0.15, "masked fraction (80/10/10 mask/random/keep)", above=0, below=1)
    max_grad_norm: float | None = option(1.0, "gradient clipping norm; null: no clipping", above=0)
    bf16: Literal["auto"] | bool = option(
        "auto", "mixed precision; auto: bf16 on a GPU with native bf16 (compute capability >= 8.0), fp16 with "
        "loss scaling on an older GPU, fp32 on the CPU; true: bf16 autocast anywhere; false: fp32")
    device: Literal["auto", "cpu", "cuda"] = option("auto", "auto: cuda when available", operational=True)
    log_interval: int = option(50, "optimizer steps per train_log.jsonl record", minimum=1, operational=True)
    checkpoint_interval: int = option(500, "optimizer steps between checkpoints", minimum=1, operational=True)
    checkpoint_dir: str | None = option(None, "default: <output>/checkpoints", operational=True)
    keep_checkpoints: int = option(2, "newest checkpoints kept while the run goes on", minimum=1, operational=True)
    keep_checkpoints_when_done: bool = option(
        False, "keep the checkpoints of a run that completes (false: removed, so a rerun starts at step 0; a "
        "completed run's kept checkpoints are never resumed either)", operational=True)
    num_workers: int = option(0, "DataLoader worker processes", minimum=0, operational=True)
    pad_to: Literal["max_length"] | int | None = option(
        None, "pad every batch to this many tokens (max_length: the longest window) with a fixed masked-position "
        "budget, so every step has one shape (compile, CUDA graphs); null: pad to each batch's longest", minimum=1)
    compile: Literal["aot_eager", "eager"] | bool = option(
        False, "torch.compile the training step (teacher forward, student forward and backward, losses): true: "
        "inductor; aot_eager / eager: Dynamo's debugging backends; give pad_to too, or shapes retrace",
        operational=True)
    gradient_checkpointing: bool = option(
        False, "recompute each recursion's (layer's) activations in the backward pass: less memory, ~1/3 more compute",
        operational=True)

    RENAMED: ClassVar[dict[str, str]] = {
        "gradient_accumulation_steps": "max_batch_per_device (batch_size is now the global batch of all "
                                       "processes; gradient accumulation follows from the two)",
    }

    def check(self, key: str) -> None:
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(f"{_join(key, 'max_steps')} / {_join(key, 'epochs')}: set exactly one of them")


# ------------------------------------------------------------------------------------------
# models


@dataclass(kw_only=True)
class TeacherModelConfig(Section):
    """The shape of a BERT masked-LM teacher trained here (`pretrain-teacher`, `init-scratch`)."""

    hidden_size: int = option(256, "H", minimum=1)
    num_hidden_layers: int = option(4, "layers", minimum=1)
    num_attention_heads: int = option(4, "heads; must divide hidden_size", minimum=1)
    intermediate_size: int = option(1024, "FFN width", minimum=1)
    max_position_embeddings: int = option(512, "longest input", minimum=1)

    def check(self, key: str) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{_join(key, 'num_attention_heads')}: must divide {_join(key, 'hidden_size')} "
                              f"({self.hidden_size}), got {self.num_attention_heads}")



@dataclass(kw_only=True)
class RelaxationConfig(Section):
    """Relaxed recursion (Bae et al. 2025): what each recursion owns besides its adapters."""

    lora_rank: int = option(0, "rank r of each recursion's LoRA delta on the targets; 0: none", minimum=0)
    lora_alpha: float | None = option(None, "the delta is scaled by alpha / r; null: alpha = r (scale 1)", above=0)
    lora_init: Literal["svd", "zeros"] = option(
        "svd", "svd: truncated SVD of W_teacher[layer_map[i]] - W_shared (needs the teacher's layer shape); "
        "zeros: A normal, B = 0", model=None)
    lora_targets: list[Literal["query", "key", "value", "dense", "ffn", "ffn_output"]] = option(
        factory=lambda: list(RELAXATION_TARGETS), doc="the shared linears that get deltas (and own biases)")
    norms: bool = option(False, "each recursion owns its two LayerNorms (from its teacher layer)", model="relax_norms")
    biases: bool = option(False, "each recursion owns the biases of the target linears (from its teacher layer)",
                          model="relax_biases")

    def check(self, key: str) -> None:
        if not self.lora_targets or len(set(self.lora_targets)) != len(self.lora_targets):
            raise ConfigError(f"{_join(key, 'lora_targets')}: expected distinct names from "
                              f"{', '.join(RELAXATION_TARGETS)}, got {self.lora_targets}")

    @property
    def relaxed(self) -> bool:
        return bool(self.lora_rank) or self.norms or self.biases


@dataclass(kw_only=True)
class StudentConfig(Section):
    """The MiniALBERT student of `distill`; null sizes are the teacher's. Each field that is a
    model setting names its `MiniAlbertConfig` attribute (`option(model=...)`, default: the same
    name); `minialbert.student.student_model_config` derives the model config from that alone."""

    num_recursions: int = option(6, "N: how often the shared layers are applied", minimum=1,
                                 model="num_hidden_layers")
    unique_layers: int = option(1, "M distinct layers shared over the N recursions (1: MiniALBERT)", minimum=1)
    sharing: Literal["cycle", "sequence", "cycle_rev"] = option(
        "cycle", "which layer each recursion applies; N=6, M=3: cycle ABCABC, sequence AABBCC, cycle_rev ABCCBA")
    init_from_teacher: Literal["stepwise", "average", "lower"] | None = option(
        None, "copy teacher layers into the shared ones (and the teacher's embeddings and MLM head); "
        "null: random init", model=None)
    relaxation: RelaxationConfig = option(factory=RelaxationConfig, doc="per-recursion LoRA, norms, biases")
    embedding_size: int | None = option(
        None, "E of the factorised embeddings (projected to H); null: 128, or the teacher's H when "
        "init_from_teacher copies its embeddings", minimum=1)
    hidden_size: int | None = option(None, "H; null: the teacher's", minimum=1, teacher_default=True)
    num_attention_heads: int | None = option(None, "null: the teacher's", minimum=1, teacher_default=True)
    intermediate_size: int | None = option(None, "FFN width; null: the teacher's", minimum=1, teacher_default=True)
    hidden_act: str = option("gelu", "activation of the FFN and the adapters")
    use_adapter: bool = option(True, "per-recursion bottleneck adapters")
    reduction_factor: int = option(16, "adapter bottleneck width H / reduction_factor", minimum=1)
    hidden_dropout_prob: float = option(0.1, "", minimum=0, below=1)
    attention_probs_dropout_prob: float = option(0.1, "", minimum=0, below=1)
    embeddings_from: str | None = option(None, "model dir or hub name whose embeddings initialise the student's",
                                         model=None)

    def check(self, key: str) -> None:
        if self.unique_layers > self.num_recursions:
            raise ConfigError(f"{_join(key, 'unique_layers')}: expected at most num_recursions "
                              f"({self.num_recursions}), got {self.unique_layers}")


class LossWeights(Section):
    """The weight of every distillation term, one key per term of `minialbert.loss_terms` (its
    default: the paper's); only terms that need no teacher (mlm) weighted: no teacher is run."""

    def __init__(self, **weights: float):
        self.weights = {**default_weights(), **weights}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, key: str = "", also_allowed: tuple[str, ...] = ()) -> LossWeights:
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{key or 'weights'}: expected a mapping, got {raw!r}")
        values = {}
        for name, value in raw.items():
            if name not in LOSS_TERMS:
                raise ConfigError(f"{_join(key, name)}: unknown key{did_you_mean(name, LOSS_TERMS)} "
                                  f"(allowed: {', '.join(LOSS_TERMS)})")
            values[name] = _coerce(value, float, _join(key, name))
            if values[name] < 0:
                raise ConfigError(f"{_join(key, name)}: expected a number >= 0, got {values[name]!r}")
        weights = cls(**values)
        weights.check(key)
        return weights

    def check(self, key: str) -> None:
        if not any(v > 0 for v in self.weights.values()):
            raise ConfigError(f"{key or 'weights'}: at least one component must have a weight > 0")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.weights)

    def __getattr__(self, name: str) -> float:
        try:
            return self.__dict__["weights"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossWeights) and self.weights == other.weights

    def __repr__(self) -> str:
        return f"LossWeights({self.weights})"

    @classmethod
    def describe(cls, indent: int = 0) -> str:
        return "\n".join(f"{' ' * indent}{name}: {_yaml_value(term.weight)}  # {term.doc}"
                         for name, term in LOSS_TERMS.items())


@dataclass(kw_only=True)
class RelationConfig(Section):
    """Which layers the relation term (MiniLMv2) compares, and in how many relation heads."""

    teacher_layer: int = option(-1, "0-based teacher layer; negative counts from the end")
    student_recursion: int = option(-1, "0-based student recursion; negative counts from the end")
    heads: int | None = option(None, "relation heads; must divide both widths; null: the teacher's head count",
                               minimum=1)


@dataclass(kw_only=True)
class LossConfig(Section):
    """The distillation objective."""

    layer_map: list[int] | None = option(None, "teacher layer (0-based) per recursion; null: uniform (i+1)*T/N-1")
    weights: LossWeights = option(factory=LossWeights, doc="per-term weights")
    temperature: float = option(1.0, "softmax temperature of the output KL", above=0)
    relation: RelationConfig = option(factory=RelationConfig, doc="the relation term's layers and heads")

    def check(self, key: str) -> None:
        if self.layer_map is not None and any(j < 0 for j in self.layer_map):
            raise ConfigError(f"{_join(key, 'layer_map')}: expected 0-based teacher layer indices, got {self.layer_map}")


# ------------------------------------------------------------------------------------------
# a student against its teacher: the rules that need only the teacher's config (no model, no
# torch or transformers), applied by `distill` when it builds the student and by the workflow's
# plan when the teacher's shape is known from the config (a pretrain teacher, a local dir)

DEFAULT_EMBEDDING_SIZE = 128  # E when the section leaves it null and nothing is copied
# what must be equal for teacher layers to be copied into the student's
SHAPE_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act")


def student_model_settings(spec: StudentConfig, teacher_config: Any) -> dict[str, Any]:
    """{MiniAlbertConfig attribute: value} of the `student:` section's model settings, nulls
    resolved from the teacher's config (`minialbert.student.student_model_config` adds the
    teacher's vocabulary and positions). ConfigError names the key."""
    tc = teacher_config
    copy_embeddings = spec.init_from_teacher is not None and not spec.embeddings_from
    if copy_embeddings and spec.embedding_size not in (None, tc.hidden_size):
        raise ConfigError(f"student.embedding_size: init_from_teacher copies the teacher's embeddings, so E must "
                          f"be the teacher's H ({tc.hidden_size}); got {spec.embedding_size} (leave it null)")
    settings = {attr: getattr(tc, attr) if value is None and from_teacher else value
                for attr, (value, from_teacher) in spec.model_settings().items()}
    if settings["embedding_size"] is None:
        settings["embedding_size"] = tc.hidden_size if copy_embeddings else DEFAULT_EMBEDDING_SIZE
    return settings


def teacher_layers_key(spec: StudentConfig) -> str | None:
    """The key that makes the student copy teacher layers (init_from_teacher, SVD-initialised
    LoRA), so that its layer shape must be the teacher's; None when nothing is copied."""
    if spec.init_from_teacher is not None:
        return "student.init_from_teacher"
    if spec.relaxation.lora_rank and spec.relaxation.lora_init == "svd":
        return "student.relaxation.lora_init: svd"
    return None


def check_compatible(student_config: Any, teacher_config: Any, key: str) -> None:
    """ConfigError naming every shape field in which student and teacher (configs) differ."""
    differ = [f"{f} (student {getattr(student_config, f)!r}, teacher {getattr(teacher_config, f, None)!r})"
              for f in SHAPE_FIELDS if getattr(student_config, f) != getattr(teacher_config, f, None)]
    if differ:
        raise ConfigError(f"{key}: needs the student's layer shape to equal the teacher's; differs in "
                          + "; ".join(differ))


def check_student(cfg: "DistillConfig", teacher_config: Any) -> None:
    """The distill job's checks of a student against its teacher that need only the teacher's
    config (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act):
    the resolved sizes, the layer shape when teacher layers are copied, the student's own shape
    (heads and the LoRA rank against its width), the layer map and each weighted loss term's
    settings (`Objective.resolve` calls the same functions). ConfigError names the key."""
    student = types.SimpleNamespace(**student_model_settings(cfg.student, teacher_config))
    key = teacher_layers_key(cfg.student)
    if key is not None:
        check_compatible(student, teacher_config, key)
    if student.hidden_size % student.num_attention_heads:
        raise ConfigError(f"student.num_attention_heads: must divide the student's hidden_size "
                          f"({student.hidden_size}), got {student.num_attention_heads}")
    if student.lora_rank > student.hidden_size:
        raise ConfigError(f"student.relaxation.lora_rank: expected at most the student's hidden_size "
                          f"({student.hidden_size}), got {student.lora_rank}")
    try:
        resolve_terms(cfg.loss.weights.to_dict(), student, teacher_config, cfg.loss.layer_map, cfg.loss.to_dict())
    except ValueError as e:
        raise loss_config_error(e) from None


# ------------------------------------------------------------------------------------------
# commands


@dataclass(kw_only=True)
class DistillConfig(Section):
    """`minialbert distill --config FILE --output DIR`."""

    teacher: str = option(doc="a masked-LM teacher: model dir or hub name")
    windows: str = option(doc="windows dir (minialbert make-windows)")
    tokenizer: str | None = option(None, "tokenizer dir or hub name; null: the teacher's")
    student: StudentConfig = option(factory=StudentConfig, doc="the student")
    loss: LossConfig = option(factory=LossConfig, doc="the objective")
    training: TrainingConfig = option(factory=TrainingConfig, doc="optimisation")


@dataclass(kw_only=True)
class InitStudentConfig(Section):
    """`minialbert init-student --config FILE --output DIR`: the student exactly as `distill`
    with the same config starts from (a distill config is accepted as is)."""

    teacher: str = option(doc="a masked-LM teacher: model dir or hub name")
    tokenizer: str | None = option(None, "tokenizer dir or hub name; null: the teacher's")
    student: StudentConfig = option(factory=StudentConfig, doc="the student")
    loss: LossConfig = option(factory=LossConfig, doc="its layer_map says which teacher layer each recursion is")
    seed: int | None = option(None, "initialisation seed; null: training.seed, else distill's default", minimum=0)
    windows: str | None = option(None, "ignored (read by distill)")
    training: dict | None = option(None, "ignored, except its seed (read by distill)")

    def resolved_seed(self, key: str = "") -> int:
        """The seed distill would initialise with: `seed`, else training.seed, else its default."""
        if self.seed is not None:
            return self.seed
        seed = (self.training or {}).get("seed", TrainingConfig.seed)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{_join(key, 'training.seed')}: expected an integer >= 0, got {seed!r}")
        return seed


@dataclass(kw_only=True)
class PretrainTeacherConfig(Section):
    """`minialbert pretrain-teacher --config FILE --output DIR`: BERT MLM from scratch."""

    tokenizer: str = option(doc="tokenizer dir or hub name")
    windows: str = option(doc="windows dir (minialbert make-windows)")
    model: TeacherModelConfig = option(factory=TeacherModelConfig, doc="the BERT's shape")
    training: TrainingConfig = option(factory=TrainingConfig, doc="optimisation")


@dataclass(kw_only=True)
class ScratchModelConfig(Section):
    """`minialbert init-scratch --config FILE --output DIR`: a teacher's architecture, untrained."""

    tokenizer: str = option(doc="tokenizer dir or hub name")
    model: TeacherModelConfig = option(factory=TeacherModelConfig, doc="the BERT's shape")
    seed: int = option(0, "initialisation seed")


@dataclass(kw_only=True)
class WindowsConfig(Section):
    """`minialbert make-windows`: cut a corpus into overlapping token windows."""

    max_length: int = option(256, "tokens per window incl. [CLS]/[SEP]", minimum=1)
    stride: int = option(128, "content tokens shared by consecutive windows", minimum=1)
    max_windows_per_document: int | None = option(10, "windows kept per document, sampled; null: all", minimum=1)
    seed: int = option(42, "seed of the window sampling")
    num_proc: int = option(1, "tokenisation processes (the output does not depend on it)", minimum=1,
                           operational=True)

    RENAMED: ClassVar[dict[str, str]] = {"max_windows_per_doc": "max_windows_per_document"}


@dataclass(kw_only=True)
class TokenizerConfig(Section):
    """`minialbert train-tokenizer`: a WordPiece vocabulary trained on a corpus."""

    vocab_size: int = option(30522, "target vocabulary size (BERT's)", minimum=6)
    lowercase: bool = option(True, "lowercase and strip accents, like bert-base-uncased")


@dataclass(kw_only=True)
class EfficiencyConfig(Section):
    """`minialbert efficiency`: CPU forward latency at a fixed shape."""

    batch_size: int = option(8, "sequences per timed forward", minimum=1)
    max_length: int = option(128, "tokens per timed sequence (capped at the model's positions)", minimum=1)
    repeats: int = option(10, "timed forwards (the median is reported)", minimum=1)
    warmup_repeats: int = option(2, "untimed forwards first", minimum=0)
    threads: int = option(1, "torch CPU threads", minimum=1)

    RENAMED: ClassVar[dict[str, str]] = {"seq_len": "max_length", "warmup": "warmup_repeats"}


@dataclass(kw_only=True)
class FinetuneSettings(Section):
    """What a fine-tuning run computes besides model, task, mode, lr and seed (the workflow's
    `finetune:` defaults and per-task overrides are these keys)."""

    epochs: float = option(3.0, "passes over the training split; 0: evaluate without training", minimum=0)
    batch_size: int = option(32, "training batch size", minimum=1)
    max_length: int = option(128, "max tokens per example (NER: per chunk; longer sentences are split)",
                             minimum=1)
    scheduler: Literal["linear", "cosine", "constant"] = option("linear", "lr schedule after warm-up")
    weight_decay: float = option(0.01, "AdamW weight decay", minimum=0)
    warmup_ratio: float = option(0.0, "fraction of the training steps spent warming up", minimum=0, below=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm", above=0)
    group_by_length: bool = option(
        False, "batch training examples of similar length together (less padding, so faster; but a batch then "
               "shares whatever length predicts, e.g. the label, which can stall training: see the README)")
    reduction_factor: int = option(16, "adapter bottleneck H/r for encoders without their own adapters",
                                   minimum=1)

    RENAMED: ClassVar[dict[str, str]] = {
        "warmup": "warmup_ratio (a fraction of the training steps, < 1)",
    }


@dataclass(kw_only=True)
class ExitsConfig(Section):
    """Adaptive depth (`minialbert.exits`): a MiniALBERT student's task head after every
    recursion from `min_recursion` on, trained to be a good exit, and confidence thresholds
    calibrated so that stopping early disagrees with the full depth on at most a fraction
    epsilon of new examples, with probability >= 1 - delta."""

    min_recursion: int = option(1, "first recursion (1-based) with an exit", minimum=1)
    heads: Literal["shared", "per_recursion"] = option("shared", "one head for all recursions, or one each")
    loss: Literal["weighted", "distill"] = option(
        "weighted", "weighted: sum i * L_i / sum i (PABEE); distill: L at full depth + each earlier exit "
                    "distilled from the final one (KL; MSE for regression)")
    epsilons: list[float] = option(factory=lambda: [0.01, 0.05, 0.1], doc="target disagreement rates to calibrate",
                                   above=0, below=1)
    delta: float = option(0.1, "risk: the guarantee holds with probability >= 1 - delta", above=0, below=1)
    calibration_split: Literal["auto", "dev", "train"] = option(
        "auto", "where thresholds are calibrated: dev (then scores are reported on test), train (a held-out "
                "part, not trained on; scores on test, else dev); auto: dev when test is labelled, else train")
    calibration_fraction: float = option(0.1, "the part of train held out when calibrating on train",
                                         above=0, below=1)
    tolerance: float = option(0.1, "regression: two answers agree within this (the task's scale)", minimum=0)
    timing_examples: int = option(200, "examples timed at batch size 1 (the exit_timing job)", minimum=1,
                                  operational=True)

    def check(self, key: str) -> None:
        if not self.epsilons or any(not 0 < e < 1 for e in self.epsilons) or len(set(self.epsilons)) < len(self.epsilons):
            raise ConfigError(f"{_join(key, 'epsilons')}: expected distinct numbers in (0, 1), got {self.epsilons!r}")


@dataclass(kw_only=True)
class FinetuneConfig(FinetuneSettings):
    """`minialbert finetune`: one model on one task, one mode, lr and seed -> metrics.json."""

    model: str = option(doc="model dir (save_pretrained, with its tokenizer) or hub name")
    task: str = option(doc="prepared task dir (minialbert prepare-task) or a task spec file")
    output: str = option(doc="output dir: metrics.json (and model/ with save_model)", operational=True)
    lr: float = option(doc="peak learning rate", above=0)
    model_name: str | None = option(None, "the model's name in tables; default: the model dir's name")
    mode: Literal["full", "adapter"] = option("full", "full fine-tuning or adapter tuning")
    seed: int = option(0, "seed of head initialisation, batch order and dropout", minimum=0)
    eval_batch_size: int = option(64, "evaluation batch size", minimum=1, operational=True)
    eval_max_tokens: Literal["auto"] | int = option(
        "auto", "padded tokens per eval batch; auto: 1024 on CPU, no cap on GPU", minimum=1, operational=True)
    bf16: Literal["auto"] | bool = option(
        "auto", "mixed precision; auto: bf16 on a GPU with native bf16 (compute capability >= 8.0), fp16 with "
        "loss scaling on an older GPU, fp32 on the CPU; true: bf16 autocast anywhere; false: fp32")
    device: str = option("auto", "auto, cpu, cuda, cuda:1, ...", operational=True)
    threads: int | None = option(None, "torch CPU threads; null: torch's default", minimum=1, operational=True)
    save_model: bool = option(False, "keep the fine-tuned model in <output>/model", operational=True)
    exits: ExitsConfig | None = option(None, "adaptive depth: exits after every recursion (MiniALBERT only); "
                                             "null: off")
    gradient_checkpointing: bool = option(
        False, "recompute each recursion's (layer's) activations in the backward pass: less memory, more compute",
        operational=True)
    provenance: dict | None = option(None, "recorded verbatim in metrics.json (the workflow's identities)",
                                     operational=True)

    def resolved(self) -> dict[str, Any]:
        """What the run computes: recorded in metrics.json and hashed (operational keys dropped)."""
        resolved = {k: v for k, v in self.to_dict().items() if k not in self.operational_keys()}
        if resolved.get("exits") is None:  # runs without exits keep their config and hash
            resolved.pop("exits", None)
        else:
            resolved["exits"].pop("timing_examples")
        return resolved

    @property
    def name(self) -> str:
        """The model's name: model_name, else the model dir's last component."""
        return self.model_name or self.model.rstrip("/").rsplit("/", 1)[-1]


# ------------------------------------------------------------------------------------------
# command-line flags generated from a flat config dataclass


def _parse_value(text: str) -> Any:
    """A flag's text as YAML would read it: numbers, true/false, null, else the string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                         prefix: str = "") -> None:
    """One --flag per scalar field of the config dataclass `cls` (its doc as help, its default shown);
    with a `prefix` (e.g. "exit-"), flags are --exit-<field> and their dests exit_<field>."""
    dest_prefix = prefix.replace("-", "_")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.name in skip or tp is dict or typing.get_origin(tp) is list:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = "" if required else f" (default: {f.default})"
        # SUPPRESS: a flag not given stays out of the namespace, so `--flag null` can set None
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS,
                                  "help": f"{f.metadata.get('doc', '')}{default}"}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=_parse_value, metavar=f.name.upper(), required=required)
            if typing.get_origin(tp) is Literal:
                kwargs["choices"] = typing.get_args(tp)
        parser.add_argument("--" + prefix + f.name.replace("_", "-"), **kwargs)
    for old in getattr(cls, "RENAMED", {}) if not prefix else ():  # accepted only to be refused with the new name
        parser.add_argument("--" + old.replace("_", "-"), dest=old, type=_parse_value, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def config_from_args(cls: type, args: argparse.Namespace, prefix: str = "", extra: dict | None = None):
    """The config dataclass from the flags that were given (the rest keep their defaults), plus
    `extra` fields; an old flag name fails in `from_dict`, naming the new one."""
    dest_prefix = prefix.replace("-", "_")
    names = {f.name for f in dataclasses.fields(cls)} | set(getattr(cls, "RENAMED", {}))
    given = {k[len(dest_prefix):]: v for k, v in vars(args).items() if k.startswith(dest_prefix)}
    return cls.from_dict({**{k: v for k, v in given.items() if k in names}, **(extra or {})})
