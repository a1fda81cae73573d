"""The workflow's plan: a validated config in, every model, run and job config out.

Snakemake's `rules/common.smk` builds one `Plan` when the DAG is built and its input and
params functions are one-line lookups into it; the tests build plans directly, without
Snakemake. Nothing here imports torch or transformers or touches the network: hub names are
only written into job configs, the jobs themselves download.

"Rerun only what changed": every job gets one param, `job_config`, the canonical JSON of
exactly the settings that determine its output, including the identity (a hash of the
resolved config chain) of every upstream artefact it reads. Snakemake's params rerun trigger
then reruns a job iff its own config or an upstream config changed. Library code is
deliberately not an input: after changing it, rerun what you mean to with `--forcerun RULE`.
A job's inputs (the `*_inputs` methods) are the upstream outputs and the local files it reads
(a task's files, a corpus's files, the files of a local model or tokenizer dir, never a dir:
Snakemake compares a dir's mtime, which editing a file inside leaves alone), so editing a data
file reruns its dependants through the mtime trigger.

Command sections (`student`, `loss`, `training`, a teacher's `model`, a task's `finetune`,
`report.efficiency`, a windows or tokenizer entry's settings) are validated here by the
dataclass of the command that owns them (`minialbert.command_configs`), so a bad value fails before
any job runs. Model and training sections travel to their job as written (the command fills
its defaults and records them in metrics.json); windows and tokenizer settings are filled in,
as the identity of every model hashes them.
"""

from __future__ import annotations

import copy
import glob
import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Mapping

from minialbert.command_configs import (
    DistillConfig,
    EfficiencyConfig,
    ExitsConfig,
    FinetuneSettings,
    LossConfig,
    PretrainTeacherConfig,
    Section,
    StudentConfig,
    TeacherModelConfig,
    TokenizerConfig,
    WindowsConfig,
    check_student,
    teacher_layers_key,
)
from minialbert.data.corpora import input_files as corpus_input_files
from minialbert.data.corpora import validate_source
from minialbert.loss_terms import needs_teacher
from minialbert.tasks import input_files as task_input_files
from minialbert.tasks import parse_task_spec
from minialbert.utils import ConfigError, canonical_json, config_hash, did_you_mean, load_yaml, shown_value

DEMO_DIR = "results/demo"
NAME_RE = "[A-Za-z0-9][A-Za-z0-9._-]*"
MODES = ("full", "adapter")
# how every config error found when the plan is built starts, one message per line after it
INVALID = "invalid config (nothing was run):\n  "
# keys of a model entry that only affect its fine-tuning runs and the tables, not the model
FINETUNE_ONLY_KEYS = ("label", "modes", "finetune_epochs_factor", "finetune_exits")
# keys of the workflow's `finetune:` sections that are not settings of one run
# keys of a `finetune:` section that the workflow reads itself (the rest are FinetuneSettings);
# save_model reaches a run's command only when true, so that it is a rerun only for those runs
FINETUNE_WORKFLOW_KEYS = ("models", "modes", "lr", "seeds", "save_model", "exits")
TOKENIZER_WORKFLOW_KEYS = ("source", "name", "model", "path", "corpus")
WINDOWS_WORKFLOW_KEYS = ("corpus", "tokenizer")
# old keys of the workflow config -> what to write instead
RENAMED = {("finetune", "warmup"): "warmup_ratio (a fraction of the training steps, < 1)"}


class Problems:
    """Collects config problems so that one run reports all of them."""

    def __init__(self):
        self.messages: list[str] = []

    def fail(self, key: str, message: str) -> None:
        self.messages.append(f"config key {key}: {message}")

    def section(self, cls: type[Section], raw: Any, key: str, **kwargs) -> Section | None:
        """`cls.from_dict(raw)`, a failure recorded instead of raised."""
        try:
            return cls.from_dict(raw, key=key, **kwargs)
        except ConfigError as e:
            self.messages.append(f"config key {e}")
            return None

    def check_within(self, key: str, validate, *args) -> bool:
        """Run a command's validator whose message names its key inside the entry `key`; record a failure."""
        try:
            validate(*args)
            return True
        except ConfigError as e:
            self.messages.append(f"config key {key}.{e}")
            return False

    def check(self, validate, *args, **kwargs) -> None:
        """Run a command's own validator (its message already names the key); record a failure."""
        try:
            validate(*args, **kwargs)
        except ConfigError as e:
            self.messages.append(str(e))

    def raise_if_any(self) -> None:
        if self.messages:  # once each: a section checked for both tuning modes fails the same way twice
            raise ConfigError(INVALID + "\n  ".join(dict.fromkeys(self.messages)))


# ------------------------------------------------------------------------------------------
# schema validation


def _dotted(path) -> str:
    """['students', 'a', 'loss'] -> 'students.a.loss' (list indices as [i])."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _validator_with_defaults(schema: dict):
    """A JSON-schema validator that fills `default`s into the instance as it validates
    (what snakemake.utils.validate does), so the plan sees every workflow key."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, subschema)

    return jsonschema.validators.extend(base, {"properties": properties})(schema)


def validate_config(config: dict, schema: str | os.PathLike | dict) -> dict:
    """Validate `config` in place against the workflow schema, filling defaults; ConfigError names the key."""
    import jsonschema

    if not isinstance(schema, dict):
        schema = load_yaml(schema)
    # `--config check_paths=false` arrives as a string
    if str(config.get("check_paths")).lower() in ("true", "false"):
        config["check_paths"] = str(config["check_paths"]).lower() == "true"
    for (section, old), new in RENAMED.items():
        if isinstance(config.get(section), dict) and old in config[section]:
            raise ConfigError(f"{INVALID}config key {section}.{old}: this key was renamed: use {new}")
    errors = list(_validator_with_defaults(schema).iter_errors(config))
    if errors:
        err = jsonschema.exceptions.best_match(errors)  # for oneOf, the alternative that came closest
        raise ConfigError(f"{INVALID}config key {schema_error_message(err)}")
    return config


_JSON_TYPES = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true or false",
               "array": "a list", "object": "a mapping", "null": "null"}


def schema_error_message(err) -> str:
    """A jsonschema error in the style of the command configs' errors: `<key>: expected ..., got ...`."""
    key, schema, value, got = _dotted(err.absolute_path), err.schema, err.instance, shown_value(err.instance)
    kind = err.validator
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(k for k in value if k not in allowed)[0]
        return (f"{_dotted(list(err.absolute_path) + [unknown])}: unknown key{did_you_mean(unknown, allowed)} "
                f"(allowed under {key}: {', '.join(allowed)})")
    if kind == "required":
        missing = next(k for k in err.validator_value if k not in value)
        return f"{_dotted(list(err.absolute_path) + [missing])}: missing (required under {key})"
    if kind == "type":
        types = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        return f"{key}: expected {' or '.join(_JSON_TYPES.get(t, t) for t in types)}, got {got}"
    if kind == "enum":
        options = ", ".join(repr(o) for o in err.validator_value)
        return f"{key}: expected one of {options}, got {got}{did_you_mean(value, err.validator_value)}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{key}: expected a number {bounds[kind]} {err.validator_value}, got {got}"
    if kind == "pattern":
        return f"{key}: expected a string matching {err.validator_value}, got {got}"
    if kind in ("oneOf", "anyOf") and schema.get("description"):
        return f"{key}: expected {schema['description']}, got {got}"
    return f"{key}: {err.message}"


# ------------------------------------------------------------------------------------------
# the plan


@dataclass
class Model:
    """A row of the tables: a teacher, student or baseline, wherever it comes from."""

    name: str
    kind: str  # teacher | student | baseline
    source: str  # pretrain | hub | local | authors | scratch | distill
    dir: str  # the model dir every job reads
    inputs: list[str]  # the files a job reading it depends on
    identity: str  # hash of the resolved config chain that produced it
    label: str = ""
    modes: list[str] = field(default_factory=list)
    epochs_factor: float = 1


def model_output(kind: str, name: str) -> str:
    """The one path pattern of every model the workflow makes or fetches: <output>/model."""
    return f"results/{kind}s/{name}"


def architecture_output(teacher: str) -> str:
    """Where a pretrain teacher's architecture is saved untrained (<output>/model), for the
    students that need no trained teacher (`Plan.architecture_only`)."""
    return f"results/architectures/{teacher}"


def lr_label(lr: float) -> str:
    """The learning rate as it appears in paths: 5e-05, 0.0005, 0.001."""
    return format(float(lr), "g")


def model_dir_files(path: str) -> list[str]:
    """The files of a local model (or tokenizer) dir that loading it reads: its top-level files
    (config, weights, tokenizer), hidden ones aside; none when it does not exist. A dir input
    would not do: Snakemake compares a dir's mtime, which editing a file in place leaves alone."""
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
        return []
    return [os.path.join(path, f) for f in sorted(os.listdir(root))
            if not f.startswith(".") and os.path.isfile(os.path.join(root, f))]


def run_dir(model: str, task: str, mode: str, lr: str, seed: str | int) -> str:
    return f"results/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}"


class Plan:
    """Everything the rules need, computed once from a validated config."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self._architecture_only: dict[str, bool] = {}  # student -> Plan.architecture_only, worked out once
        problems = Problems()
        self._check_references(problems)
        problems.raise_if_any()  # dangling names would break the registry below
        self.windows_settings = {n: problems.section(WindowsConfig, self._settings(e, WINDOWS_WORKFLOW_KEYS),
                                                     f"windows.{n}", also_allowed=WINDOWS_WORKFLOW_KEYS)
                                 for n, e in config["windows"].items()}
        self.tokenizer_settings = {n: problems.section(TokenizerConfig, self._settings(e, TOKENIZER_WORKFLOW_KEYS),
                                                       f"tokenizers.{n}", also_allowed=TOKENIZER_WORKFLOW_KEYS)
                                   for n, e in config["tokenizers"].items()}
        self.efficiency = problems.section(EfficiencyConfig, config["report"].get("efficiency"), "report.efficiency")
        self.summary_dir: str = config["report"]["summary_dir"]
        for name in config["corpora"]:  # the source spec `minialbert ingest-corpus` will read
            problems.check(validate_source, corpus_source(self.corpus_job(name)), where=f"config key corpora.{name}")
        for task in config["tasks"]:  # the spec `minialbert prepare-task` will read
            problems.check(parse_task_spec, self.task_job(task)["spec"], origin=f"config key tasks.{task}.spec")
        problems.raise_if_any()
        self.models: dict[str, Model] = self._registry(problems)
        self.runs: dict[tuple[str, str, str, str, str], dict] = self._runs(problems)
        problems.raise_if_any()

    # --------------------------------------------------------------------- paths and names

    def expand_path(self, value: Any) -> Any:
        """Substitute '{data_root}' and '{demo}' in a config path."""
        if not isinstance(value, str):
            return value
        if "{data_root}" in value:
            if not self.config.get("data_root"):
                raise ConfigError(f"config path '{value}' uses {{data_root}} but data_root is not set")
            value = value.replace("{data_root}", str(self.config["data_root"]).rstrip("/"))
        return value.replace("{demo}", DEMO_DIR)

    def expand_spec(self, obj: Any) -> Any:
        """expand_path() applied to every string of a nested mapping/list."""
        if isinstance(obj, dict):
            return {k: self.expand_spec(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.expand_spec(v) for v in obj]
        return self.expand_path(obj)

    @staticmethod
    def uses_demo(obj: Any) -> bool:
        """True if some string of a nested config value refers to the generated demo world."""
        return "{demo}" in canonical_json(obj)

    @staticmethod
    def _settings(entry: Mapping[str, Any], workflow_keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k not in workflow_keys}

    def names(self, kind: str, *sources: str) -> list[str]:
        """Names of the models of `kind` made by one of `sources` (for wildcard constraints)."""
        return [m.name for m in self.models.values() if m.kind == kind and m.source in sources]

    def _check_path(self, problems: Problems, key: str, value: str) -> None:
        if not self.config["check_paths"] or value.startswith(DEMO_DIR):
            return
        path = os.path.expanduser(value)
        exists = bool(glob.glob(path)) if glob.has_magic(value) else os.path.exists(path)
        if not exists:
            problems.fail(key, f"path '{value}' does not exist (edit the path or data_root in your config; "
                               "`--config check_paths=false` skips this check, e.g. to preview a DAG with `-n`)")

    # --------------------------------------------------------------------- references

    def _check_references(self, problems: Problems) -> None:
        """Every name a config entry points at must exist; local paths must exist."""
        c = self.config
        for name, e in c["corpora"].items():
            if e["source"] in ("hub", "files") and e["source"] not in e:
                problems.fail(f"corpora.{name}", f"source '{e['source']}' needs a '{e['source']}' mapping")
            for i, p in enumerate((e.get("files") or {}).get("paths", []) if e["source"] == "files" else []):
                self._check_path(problems, f"corpora.{name}.files.paths[{i}]", self.expand_path(p))
        for name, e in c["tokenizers"].items():
            key, source = f"tokenizers.{name}", e["source"]
            needed = {"hub": "name", "local": "path", "train": "corpus", "model": "model"}[source]
            if needed not in e:
                problems.fail(key, f"source '{source}' needs '{needed}'")
            elif source == "model":
                model = c["teachers"].get(e["model"]) or c["baselines"].get(e["model"])
                if model is None or model["source"] in ("pretrain", "scratch"):
                    problems.fail(f"{key}.model", f"'{e['model']}' is not a hub, local or authors teachers/baselines "
                                                  "entry")
            elif source == "local":
                self._check_path(problems, f"{key}.path", self.expand_path(e["path"]))
            elif source == "train" and e["corpus"] not in c["corpora"]:
                problems.fail(f"{key}.corpus", f"'{e['corpus']}' is not a corpora entry"
                                               f"{did_you_mean(e['corpus'], c['corpora'])}")
        for name, e in c["windows"].items():
            for fld, table in (("corpus", "corpora"), ("tokenizer", "tokenizers")):
                if e[fld] not in c[table]:
                    problems.fail(f"windows.{name}.{fld}", f"'{e[fld]}' is not a {table} entry"
                                                           f"{did_you_mean(e[fld], c[table])}")
        for kind in ("teachers", "students"):
            for name, e in c[kind].items():
                for fld, table in (("windows", "windows"), ("tokenizer", "tokenizers")):
                    if fld in e and e[fld] not in c[table]:
                        problems.fail(f"{kind}.{name}.{fld}", f"'{e[fld]}' is not a {table} entry"
                                                              f"{did_you_mean(e[fld], c[table])}")
        for name, e in c["students"].items():
            ref = (e.get("student") or {}).get("embeddings_from")
            named = any(ref in c[k] for k in ("teachers", "baselines", "students"))
            if isinstance(ref, str) and not named and (os.path.isabs(ref) or ref.startswith((".", "~", "{"))):
                self._check_path(problems, f"students.{name}.student.embeddings_from", self.expand_path(ref))
        for name, e in c["tasks"].items():
            spec = e["spec"]
            if isinstance(spec.get("path"), str) and not self.uses_demo(spec["path"]):
                self._check_path(problems, f"tasks.{name}.spec.path", self.expand_path(spec["path"]))
            for split, p in (spec.get("files") or {}).items():
                if isinstance(p, str) and not self.uses_demo(p):
                    self._check_path(problems, f"tasks.{name}.spec.files.{split}", self.expand_path(p))

    # --------------------------------------------------------------------- identities

    def corpus_identity(self, name: str) -> str:
        entry = self.config["corpora"][name]
        demo = (self.config.get("demo") or {}) if entry["source"] == "demo" else None
        return config_hash({"corpus": self.expand_spec(entry), "demo": demo})

    def _entry(self, name: str) -> dict:
        c = self.config
        return c["teachers"].get(name) or c["students"].get(name) or c["baselines"][name]

    def tokenizer_entry(self, name: str) -> dict:
        """The tokenizers entry with its settings resolved."""
        return {**self.config["tokenizers"][name], **self.tokenizer_settings[name].to_dict()}

    def tokenizer_identity(self, name: str) -> str:
        entry = self.tokenizer_entry(name)
        upstream = None
        if entry["source"] == "train":
            upstream = self.corpus_identity(entry["corpus"])
        elif entry["source"] == "model":
            upstream = config_hash(strip_finetune_keys(self.expand_spec(self._entry(entry["model"]))))
        return config_hash({"tokenizer": self.expand_spec(entry), "upstream": upstream})

    def windows_entry(self, name: str) -> dict:
        entry = self.config["windows"][name]
        return {**{k: entry[k] for k in WINDOWS_WORKFLOW_KEYS}, **self.windows_settings[name].to_dict()}

    def windows_identity(self, name: str) -> str:
        entry = self.windows_entry(name)
        return config_hash({"windows": entry, "corpus": self.corpus_identity(entry["corpus"]),
                            "tokenizer": self.tokenizer_identity(entry["tokenizer"])})

    def task_identity(self, task: str) -> str:
        entry = self.config["tasks"][task]
        demo = (self.config.get("demo") or {}) if self.uses_demo(entry["spec"]) else None
        return config_hash({"spec": self.expand_spec(entry["spec"]), "demo": demo})

    def tokenizer_ref(self, name: str) -> tuple[str, list[str]]:
        """(what the commands are given, the files a job depends on) for a tokenizers entry."""
        entry = self.config["tokenizers"][name]
        if entry["source"] == "hub":
            return entry["name"], []
        if entry["source"] == "local":
            path = self.expand_path(entry["path"])
            return path, model_dir_files(path)
        if entry["source"] == "model":  # a hub, local or authors entry: its dir is known before the registry
            kind = "teacher" if entry["model"] in self.config["teachers"] else "baseline"
            return self._stored_dir(kind, entry["model"])
        return f"results/tokenizers/{name}", [f"results/tokenizers/{name}"]

    def teacher_config(self, name: str) -> SimpleNamespace | None:
        """The teacher's config attributes when known without loading the model (None otherwise):
        a pretrain teacher's `model:` section (with `TeacherModelConfig`'s defaults, and BERT's
        activation), or the config.json of a local teacher dir."""
        entry = self.config["teachers"][name]
        if entry["source"] == "pretrain":
            try:
                shape = TeacherModelConfig.from_dict(entry.get("model"))
            except ConfigError:  # reported at the teacher
                return None
            return SimpleNamespace(**shape.to_dict(), hidden_act="gelu", type_vocab_size=2, layer_norm_eps=1e-12,
                                   pad_token_id=0, vocab_size=None)
        if entry["source"] == "local":
            path = os.path.join(os.path.expanduser(self.expand_path(entry["path"])), "config.json")
            try:
                with open(path, encoding="utf-8") as f:
                    config = json.load(f)
            except (OSError, ValueError):
                return None
            needed = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
            if isinstance(config, dict) and all(isinstance(config.get(k), int) for k in needed):
                return SimpleNamespace(**{"hidden_act": "gelu", **config})
        return None

    def _stored_dir(self, kind: str, name: str) -> tuple[str, list[str]]:
        """(dir, inputs) of a model that is downloaded, imported or read in place."""
        entry = self._entry(name)
        if entry["source"] == "local":
            path = self.expand_path(entry["path"])
            return path, model_dir_files(path)
        return f"{model_output(kind, name)}/model", [model_output(kind, name)]

    # --------------------------------------------------------------------- the model registry

    def _registry(self, problems: Problems) -> dict[str, Model]:
        """name -> Model for every teacher, baseline and student (one namespace)."""
        models: dict[str, Model] = {}

        def add(model: Model | None, key: str) -> None:
            if model is None:
                return
            if model.name in models:
                problems.fail(key, f"model name '{model.name}' is used twice (teachers, students and baselines "
                                   "share one namespace)")
            models[model.name] = model

        for name, entry in self.config["teachers"].items():
            add(self._teacher(name, entry, problems), f"teachers.{name}")
        for name, entry in self.config["baselines"].items():
            add(self._baseline(name, entry, problems), f"baselines.{name}")
        self.models = models  # students resolve their teacher and embeddings_from through it
        for name, entry in self.config["students"].items():  # last: a student's identity includes its teacher's
            add(self._student(name, entry, problems), f"students.{name}")
        for model in models.values():
            entry = self._entry(model.name)
            model.label = entry.get("label", model.name)
            model.modes = list(entry.get("modes") or self.config["finetune"]["modes"])
            model.epochs_factor = entry.get("finetune_epochs_factor", 1)
        return models

    def _teacher(self, name: str, entry: dict, problems: Problems) -> Model | None:
        key, source = f"teachers.{name}", entry["source"]
        if source == "pretrain":
            missing = [f for f in ("tokenizer", "windows") if f not in entry]
            for f in missing:
                problems.fail(key, f"source 'pretrain' needs '{f}'")
            if missing:
                return None
            problems.section(PretrainTeacherConfig, self._pretrain_command(name, entry), key)
            identity = config_hash({"teacher": strip_finetune_keys(entry),
                                    "tokenizer": self.tokenizer_identity(entry["tokenizer"]),
                                    "windows": self.windows_identity(entry["windows"])})
            out = model_output("teacher", name)
            return Model(name, "teacher", source, f"{out}/model", [out], identity)
        return self._stored(name, "teacher", entry, problems)

    def _baseline(self, name: str, entry: dict, problems: Problems) -> Model | None:
        key = f"baselines.{name}"
        if entry["source"] != "scratch":
            return self._stored(name, "baseline", entry, problems)
        like = self.config["teachers"].get(entry.get("like"))
        if like is None or like["source"] != "pretrain":
            problems.fail(f"{key}.like", "source 'scratch' needs 'like': a teachers entry with source pretrain, "
                                         f"got {entry.get('like')!r}")
            return None
        identity = config_hash({"baseline": strip_finetune_keys(entry), "model": like.get("model") or {},
                                "tokenizer": self.tokenizer_identity(like["tokenizer"])})
        out = model_output("baseline", name)
        return Model(name, "baseline", "scratch", f"{out}/model", [out], identity)

    def _stored(self, name: str, kind: str, entry: dict, problems: Problems) -> Model | None:
        """A hub download, an authors' checkpoint import or a local dir."""
        key, source = f"{kind}s.{name}", entry["source"]
        if source == "local" or (source == "authors" and "path" in entry):
            if "path" not in entry:
                problems.fail(key, f"source '{source}' needs 'path'")
                return None
            self._check_path(problems, f"{key}.path", self.expand_path(entry["path"]))
        elif "name" not in entry:
            problems.fail(key, f"source '{source}' needs 'name' (a hub model id)"
                               + (" or 'path'" if source == "authors" else ""))
            return None
        model_dir, inputs = self._stored_dir(kind, name)
        return Model(name, kind, source, model_dir, inputs, config_hash(strip_finetune_keys(self.expand_spec(entry))))

    def _student(self, name: str, entry: dict, problems: Problems) -> Model | None:
        key = f"students.{name}"
        teacher = self.models.get(entry["teacher"])
        if teacher is None or teacher.kind != "teacher":
            problems.fail(f"{key}.teacher", f"'{entry['teacher']}' is not a teachers entry"
                                            f"{did_you_mean(entry['teacher'], self.config['teachers'])}")
            return None
        command = self.distill_command(name)
        distill = problems.section(DistillConfig, command, key)
        if distill is None:
            return None
        teacher_config = self.teacher_config(entry["teacher"])
        if teacher_config is not None and not problems.check_within(key, check_student, distill, teacher_config):
            return None
        ref = (entry.get("student") or {}).get("embeddings_from")
        # built against the teacher's architecture only: retraining the teacher changes nothing
        teacher_identity = (self.architecture_job(entry["teacher"])["identity"] if self.architecture_only(name)
                            else teacher.identity)
        identity = config_hash({"distill": command, "teacher": teacher_identity,
                                "windows": self.windows_identity(entry["windows"]),
                                "embeddings_from": self.models[ref].identity if ref in self.models else ref})
        for other in self.models.values():  # an entry that differs only in how it is fine-tuned
            if other.kind == "student" and other.identity == identity:
                return Model(name, "student", "distill", other.dir, list(other.inputs), identity)
        out = model_output("student", name)
        return Model(name, "student", "distill", f"{out}/model", [out], identity)

    # --------------------------------------------------------------------- fine-tuning runs

    def finetune_settings(self, task: str, mode: str) -> dict[str, Any]:
        """The workflow's finetune defaults overlaid with the task's own overrides, for one tuning
        mode. Any setting may be given per mode, `{full: ..., adapter: ...}` (the authors tuned each
        mode on its own); a mode that a task's mapping leaves out takes the default's value."""
        top, own = self.config["finetune"], self.config["tasks"][task].get("finetune") or {}
        settings = {}
        for k in dict.fromkeys([*top, *own]):
            value = _for_mode(own[k], mode) if k in own else None
            value = _for_mode(top.get(k), mode) if value is None else value
            if value is not None:  # unset for this mode: the command's default
                settings[k] = value
        return settings

    def _runs(self, problems: Problems) -> dict[tuple[str, str, str, str, str], dict]:
        """(model, task, mode, lr label, seed) -> the run's FinetuneConfig fields, in a stable order."""
        names = self.config["finetune"]["models"]
        if names is None:
            names = list(self.models)
        for i, n in enumerate(names):
            if n not in self.models:
                problems.fail(f"finetune.models[{i}]", f"'{n}' is not a teachers, students or baselines entry"
                                                       f"{did_you_mean(n, self.models)}")
        models = [self.models[n] for n in names if n in self.models]
        modes = list(dict.fromkeys(m for model in models for m in model.modes))
        # each section alone first, so that an error is reported once, at the key where it is written
        top_ok = self._check_finetune_section(problems, "finetune", self.config["finetune"], modes)
        settings = {}  # (task, mode) -> (FinetuneSettings, lr grid, seeds)
        for task, entry in self.config["tasks"].items():
            key = f"tasks.{task}.finetune" if entry.get("finetune") else "finetune"
            own_ok = self._check_finetune_section(problems, key, entry.get("finetune") or {}, modes)
            for mode in modes:
                raw = self.finetune_settings(task, mode)
                if raw.get("lr") is None:
                    problems.fail(f"{key}.lr", f"no learning rates for mode '{mode}'")
                    continue
                if not (top_ok and own_ok):
                    continue
                given = {**self.config["finetune"], **(entry.get("finetune") or {})}
                per_mode = any(_for_mode(v, mode) is not v for k, v in given.items() if k != "lr")
                section = problems.section(FinetuneSettings, self._settings(raw, FINETUNE_WORKFLOW_KEYS),
                                           f"{key} ({mode} mode)" if per_mode else key,
                                           also_allowed=FINETUNE_WORKFLOW_KEYS)
                settings[task, mode] = (section, raw["lr"], raw["seeds"], bool(raw.get("save_model")),
                                        raw.get("exits"), f"{key}.exits")
        runs = {}
        for model in models:
            for task in self.config["tasks"]:
                for mode in model.modes:
                    section, grid, seeds, save_model, exits, exits_key = settings.get(
                        (task, mode), (None, [], [], False, None, ""))
                    if section is None:
                        continue
                    exits = self._exits(problems, model, exits, exits_key, mode)
                    for lr in grid:
                        for seed in seeds:
                            run = dict(section.to_dict(), lr=float(lr), seed=int(seed), mode=mode)
                            run["epochs"] = section.epochs * model.epochs_factor
                            if save_model:  # the fine-tuned model kept in the run dir, as model/
                                run["save_model"] = True
                            if exits is not None:  # only runs with exits carry the key
                                run["exits"] = exits
                            runs[(model.name, task, mode, lr_label(lr), str(seed))] = run
        return runs

    def _exits(self, problems: Problems, model: Model, exits: Any, key: str, mode: str) -> dict | None:
        """A run's adaptive-depth settings: the task's (or the default) `exits` for this mode,
        overlaid with the student entry's `finetune_exits` (which changes settings, never turns exits
        on); students only (the recursive models), None when off."""
        own = self._entry(model.name).get("finetune_exits")
        if model.kind != "student" or exits is None:
            return None
        if exits is not None and not isinstance(exits, Mapping):
            problems.fail(key, f"expected a mapping of exit settings, got {exits!r}")
            return None
        merged = {**(exits or {}), **(own or {})}
        where = f"{key} with students.{model.name}.finetune_exits" if own else key
        section = problems.section(ExitsConfig, merged, f"{where} ({mode} mode)")
        return None if section is None else section.to_dict()

    def exit_runs(self) -> list[tuple[str, str, str, str, str]]:
        """The fine-tuning runs with exits (model, task, mode, lr label, seed)."""
        return [key for key, run in self.runs.items() if "exits" in run]

    @staticmethod
    def _check_finetune_section(problems: Problems, key: str, section: Mapping[str, Any], modes: list[str]) -> bool:
        """Validate one `finetune:` section on its own: its settings for every mode once, those
        given per mode for each mode; True if it is valid."""
        before = len(problems.messages)
        settings = Plan._settings(section, FINETUNE_WORKFLOW_KEYS)
        per_mode = [k for k, v in settings.items() if _for_mode(v, MODES[0]) is not v]
        problems.section(FinetuneSettings, {k: v for k, v in settings.items() if k not in per_mode}, key,
                         also_allowed=FINETUNE_WORKFLOW_KEYS)
        for mode in modes if per_mode else ():
            values = {k: _for_mode(settings[k], mode) for k in per_mode if _for_mode(settings[k], mode) is not None}
            problems.section(FinetuneSettings, values, f"{key} ({mode} mode)", also_allowed=FINETUNE_WORKFLOW_KEYS)
        return len(problems.messages) == before

    def run_metrics(self) -> list[str]:
        return [f"{run_dir(*key)}/metrics.json" for key in self.runs]

    def finetuned_models(self) -> list[str]:
        return list(dict.fromkeys(key[0] for key in self.runs))

    # --------------------------------------------------------------------- job configs

    def checkpoint_dir(self, kind: str, name: str) -> str:
        """Stable per (entry, resolved config), outside the job's declared output, so a failed or
        killed job's checkpoints survive Snakemake's output cleanup and the retry resumes; a
        changed config gets a fresh directory instead of an incompatible checkpoint."""
        return f"results/checkpoints/{kind}/{name}-{self.models[name].identity}"

    def demo_job(self) -> dict:
        return {"demo": self.config.get("demo") or {}}

    def corpus_inputs(self, name: str) -> list[str]:
        """The demo world, the hub fetch, or the local files the corpus is read from (editing one reruns it)."""
        if self.config["corpora"][name]["source"] == "demo":
            return [DEMO_DIR]
        if self.hub_dataset("corpora", name):
            return [hub_fetch_output("corpora", name)]
        return [str(p) for p in corpus_input_files(corpus_source(self.corpus_job(name)))]

    def corpus_job(self, name: str) -> dict:
        entry = self.expand_spec(self.config["corpora"][name])
        job = {"name": name, "corpus": entry, "identity": self.corpus_identity(name),
               "demo_corpus": f"{DEMO_DIR}/corpus/corpus.txt" if entry["source"] == "demo" else None}
        if self.hub_dataset("corpora", name):
            job["hub_fetch"] = hub_fetch_output("corpora", name)
        return job

    # ------------------------------------------------------------ hub datasets: fetch, then read offline

    def hub_dataset(self, kind: str, name: str) -> dict | None:
        """The hub dataset (repo, config, revision) a corpus or task reads, or None (not a hub
        source, or a hub source named by a local dataset dir, which needs no fetch)."""
        if kind == "corpora":
            entry = self.config["corpora"][name]
            if entry["source"] != "hub" or os.path.isdir(os.path.expanduser(str(entry["hub"]["name"]))):
                return None
            hub = entry["hub"]
            return {"repo": hub["name"], "config": hub.get("config"), "revision": hub.get("revision")}
        spec = self.config["tasks"][name]["spec"]
        hub = spec.get("hub") or {}
        if spec["source"] == "glue_hub":
            return {"repo": hub.get("name", "nyu-mll/glue"), "config": hub.get("config", spec.get("glue_task")),
                    "revision": hub.get("revision")}
        if spec["source"] == "hub_ner" and not os.path.isdir(os.path.expanduser(str(hub.get("name")))):
            return {"repo": hub["name"], "config": hub.get("config"), "revision": hub.get("revision")}
        return None

    def hub_fetches(self) -> list[tuple[str, str]]:
        """(kind, name) of every corpus and task read from the hub."""
        return [(kind, name) for kind in ("corpora", "tasks") for name in self.config[kind]
                if self.hub_dataset(kind, name)]

    def fetch_job(self, kind: str, name: str) -> dict:
        return {**self.hub_dataset(kind, name), "hf_home": self.config.get("hf_home")}

    def tokenizer_inputs(self, name: str) -> list[str]:
        return [f"results/corpora/{self.config['tokenizers'][name]['corpus']}"]

    def tokenizer_job(self, name: str) -> dict:
        entry = self.tokenizer_entry(name)
        return {"name": name, "corpus_dir": f"results/corpora/{entry['corpus']}", "identity":
                self.tokenizer_identity(name), **self.tokenizer_settings[name].to_dict()}

    def windows_inputs(self, name: str) -> list[str]:
        entry = self.config["windows"][name]
        return [f"results/corpora/{entry['corpus']}"] + self.tokenizer_ref(entry["tokenizer"])[1]

    def windows_job(self, name: str) -> dict:
        entry = self.windows_entry(name)
        return {"name": name, "corpus_dir": f"results/corpora/{entry['corpus']}",
                "tokenizer": self.tokenizer_ref(entry["tokenizer"])[0],
                **self.windows_settings[name].to_dict(), "identity": self.windows_identity(name)}

    def task_inputs(self, task: str) -> list[str]:
        """The demo world, the hub fetch, or the local files the task is read from (editing one reruns it)."""
        if self.uses_demo(self.config["tasks"][task]["spec"]):
            return [DEMO_DIR]
        if self.hub_dataset("tasks", task):
            return [hub_fetch_output("tasks", task)]
        return [str(p) for p in task_input_files(parse_task_spec(self.task_job(task)["spec"]))]

    def task_job(self, task: str) -> dict:
        spec = self.expand_spec(self.config["tasks"][task]["spec"])
        spec.setdefault("name", task)
        job = {"spec": spec, "identity": self.task_identity(task)}
        if self.hub_dataset("tasks", task):
            job["hub_fetch"] = hub_fetch_output("tasks", task)
        return job

    def _pretrain_command(self, name: str, entry: dict) -> dict:
        return {"tokenizer": self.tokenizer_ref(entry["tokenizer"])[0], "windows": f"results/windows/{entry['windows']}",
                "model": entry.get("model") or {}, "training": dict(entry.get("training") or {})}

    def pretrain_inputs(self, name: str) -> list[str]:
        entry = self.config["teachers"][name]
        return [f"results/windows/{entry['windows']}"] + self.tokenizer_ref(entry["tokenizer"])[1]

    def pretrain_job(self, name: str) -> dict:
        command = self._pretrain_command(name, self.config["teachers"][name])
        command["training"]["checkpoint_dir"] = self.checkpoint_dir("teachers", name)
        return {"name": name, "identity": self.models[name].identity, "command": command}

    def scratch_inputs(self, name: str) -> list[str]:
        return self.architecture_inputs(self.config["baselines"][name]["like"])

    def scratch_job(self, name: str) -> dict:
        entry = self.config["baselines"][name]
        return {"name": name, "identity": self.models[name].identity,
                "command": self._untrained_command(entry["like"], seed=entry.get("seed", 0))}

    def _untrained_command(self, teacher: str, seed: int) -> dict:
        """The init-scratch command: a pretrain teacher's architecture and tokenizer, untrained."""
        entry = self.config["teachers"][teacher]
        return {"tokenizer": self.tokenizer_ref(entry["tokenizer"])[0], "model": entry.get("model") or {},
                "seed": seed}

    def download_job(self, name: str) -> dict:
        entry = self._entry(name)
        return {"name": entry["name"], "revision": entry.get("revision")}

    def import_inputs(self, name: str) -> list[str]:
        """The files of an authors' checkpoint read from a local dir (none for a hub name); for
        the `input:` of rule import_authors_checkpoint."""
        entry = self.config["baselines"][name]
        return model_dir_files(self.expand_path(entry["path"])) if "path" in entry else []

    def import_job(self, name: str) -> dict:
        entry = self.config["baselines"][name]
        return {"source": self.expand_path(entry["path"]) if "path" in entry else entry["name"],
                "revision": entry.get("revision")}

    def distill_command(self, name: str) -> dict:
        """The config given to `minialbert distill` (checkpoint_dir added by distill_job)."""
        entry = self.config["students"][name]
        student = dict(entry.get("student") or {})
        ref = student.get("embeddings_from")
        if ref is not None:
            student["embeddings_from"] = self.models[ref].dir if ref in self.models else self.expand_path(ref)
        teacher = (f"{architecture_output(entry['teacher'])}/model" if self.architecture_only(name)
                   else self.models[entry["teacher"]].dir)
        command = {"teacher": teacher, "windows": f"results/windows/{entry['windows']}",
                   "student": student, "loss": entry.get("loss") or {}, "training": entry.get("training") or {}}
        if "tokenizer" in entry:
            command["tokenizer"] = self.tokenizer_ref(entry["tokenizer"])[0]
        return command

    def architecture_only(self, name: str) -> bool:
        """Whether a student needs only its teacher's architecture and tokenizer, not its trained
        weights: the teacher is pretrained here, no weighted loss term reads it and nothing is
        copied from it (the MLM-only ablation). Such a distillation starts from the teacher's
        architecture saved untrained (rule init_architecture), without waiting for the
        pretraining: its student is the same, since the teacher's weights are never read."""
        if name not in self._architecture_only:
            self._architecture_only[name] = self._reads_only_architecture(self.config["students"][name], name)
        return self._architecture_only[name]

    def _reads_only_architecture(self, entry: dict, name: str) -> bool:
        teacher = self.config["teachers"].get(entry["teacher"])
        if teacher is None or teacher["source"] != "pretrain":
            return False
        if (entry.get("student") or {}).get("embeddings_from") == entry["teacher"]:
            return False
        try:
            loss = LossConfig.from_dict(entry.get("loss"), key=f"students.{name}.loss")
            spec = StudentConfig.from_dict(entry.get("student"), key=f"students.{name}.student")
        except ConfigError:  # reported where the student's sections are checked
            return False
        return not needs_teacher(loss.weights.weights) and teacher_layers_key(spec) is None

    def architecture_inputs(self, teacher: str) -> list[str]:
        return self.tokenizer_ref(self.config["teachers"][teacher]["tokenizer"])[1]

    def architecture_job(self, teacher: str) -> dict:
        """A pretrain teacher's architecture, saved untrained (the init-scratch command)."""
        command = self._untrained_command(teacher, seed=0)
        identity = config_hash({"architecture": command["model"],
                                "tokenizer": self.tokenizer_identity(self.config["teachers"][teacher]["tokenizer"])})
        return {"name": teacher, "identity": identity, "command": command}

    def distill_inputs(self, name: str) -> list[str]:
        entry = self.config["students"][name]
        teacher = ([architecture_output(entry["teacher"])] if self.architecture_only(name)
                   else self.models[entry["teacher"]].inputs)
        inputs = list(teacher) + [f"results/windows/{entry['windows']}"]
        if "tokenizer" in entry:
            inputs += self.tokenizer_ref(entry["tokenizer"])[1]
        ref = (entry.get("student") or {}).get("embeddings_from")
        if ref in self.models:
            inputs += self.models[ref].inputs
        elif isinstance(ref, str):  # a local model dir, or a hub id (no files here)
            inputs += model_dir_files(self.expand_path(ref))
        return list(dict.fromkeys(inputs))

    def distill_job(self, name: str) -> dict:
        command = self.distill_command(name)
        command["training"] = dict(command["training"], checkpoint_dir=self.checkpoint_dir("students", name))
        return {"name": name, "identity": self.models[name].identity, "command": command}

    def finetune_priority(self, model: str, task: str, mode: str, lr: str, seed: str) -> int:
        """The scheduling priority of a run: longest first among the runs that are ready, so
        that the last ones to finish are short (on the demo's 2 cores, a 45 s run started last
        left a core idle for half a minute). Its proxy for length: passes per training example,
        epochs x 16 / batch_size (the task's size is unknown before it is prepared). From 1 to
        49, below the training rules (distill 50, pretrain_teacher 100), which everything waits for."""
        run, default = self._run(model, task, mode, lr, seed), FinetuneSettings()
        passes = run.get("epochs", default.epochs) * 16 / run.get("batch_size", default.batch_size)
        return max(1, min(49, round(passes)))

    def _run(self, model: str, task: str, mode: str, lr: str, seed: str) -> dict:
        """One run's settings, by its wildcards."""
        key = (model, task, mode, lr, seed)
        if key not in self.runs:
            raise ConfigError(f"no fine-tuning run {run_dir(*key)} in the config")
        return self.runs[key]

    def finetune_job(self, model: str, task: str, mode: str, lr: str, seed: str) -> dict:
        m = self.models[model]
        provenance = {"model_identity": m.identity, "task_identity": self.task_identity(task)}
        command = {"model": m.dir, "model_name": model, "task": f"results/tasks/{task}",
                   **self._run(model, task, mode, lr, seed), "provenance": provenance}
        return {"command": command}

    def exit_timing_inputs(self, model: str, task: str, mode: str, lr: str, seed: str) -> list[str]:
        teacher = self.models[self.config["students"][model]["teacher"]]
        return [f"{run_dir(model, task, mode, lr, seed)}/metrics.json", *teacher.inputs]

    def exit_timing_job(self, model: str, task: str, mode: str, lr: str, seed: str) -> dict:
        key = (model, task, mode, lr, seed)
        if key not in self.exit_runs():
            raise ConfigError(f"no fine-tuning run with exits {run_dir(*key)} in the config")
        teacher = self.models[self.config["students"][model]["teacher"]]
        return {"run_dir": run_dir(*key), "task": f"results/tasks/{task}", "teacher_dir": teacher.dir,
                "teacher_identity": teacher.identity, "run": self.runs[key],
                "examples": self.runs[key]["exits"]["timing_examples"],
                "max_length": self.runs[key]["max_length"]}

    def exits_summary_job(self) -> dict:
        """Every run with exits, with the runs of its teacher on the same task (its score)."""
        runs = []
        for model, task, mode, lr, seed in self.exit_runs():
            teacher = self.config["students"][model]["teacher"]
            runs.append({"model": model, "label": self.models[model].label, "task": task, "mode": mode,
                         "run_dir": run_dir(model, task, mode, lr, seed),
                         "teacher_runs": [f"{run_dir(*key)}/metrics.json" for key in self.runs
                                          if key[0] == teacher and key[1] == task]})
        return {"runs": runs, "tasks": self.exit_tasks()}

    def exit_tasks(self) -> list[str]:
        return list(dict.fromkeys(key[1] for key in self.exit_runs()))

    def efficiency_job(self, model: str) -> dict:
        m = self.models[model]
        return {"name": model, "model_dir": m.dir, "model_identity": m.identity, "command": self.efficiency.to_dict()}

    def trained_models(self) -> list[str]:
        """The models trained here (teacher pretraining, distillation): they have training curves."""
        return [n for n, m in self.models.items() if m.source in ("pretrain", "distill")]

    def aggregate_job(self) -> dict:
        models = {n: {"kind": self.models[n].kind, "label": self.models[n].label, "identity": self.models[n].identity}
                  for n in dict.fromkeys(self.finetuned_models() + self.trained_models())}
        tasks = {t: {"group": e["group"], "report_split": e["report_split"]} for t, e in self.config["tasks"].items()}
        train_logs = {n: f"{self.models[n].inputs[0]}/train_log.jsonl" for n in self.trained_models()}
        return {"models": models, "tasks": tasks, "train_logs": train_logs}


def _for_mode(value: Any, mode: str) -> Any:
    """A finetune setting for one mode: `value[mode]` if it is given per mode, else `value`."""
    if isinstance(value, dict) and value and set(value) <= set(MODES):
        return value.get(mode)
    return value


def hub_fetch_output(kind: str, name: str) -> str:
    """The record of a hub dataset's fetch (rule fetch_hub_dataset), input of the job that reads it."""
    return f"results/hub/{kind}/{name}.json"


def corpus_source(job: Mapping[str, Any]) -> dict:
    """The `minialbert ingest-corpus` source spec of a corpus job config."""
    entry = job["corpus"]
    if entry["source"] == "demo":  # the corpus make-demo wrote beside its tasks (one world)
        spec = {"type": "files", "paths": [job["demo_corpus"]], "format": "text", "text_layout": "blank_line"}
    elif entry["source"] == "hub":
        spec = {"type": "hub", **{k: v for k, v in entry["hub"].items() if k != "revision" and v is not None}}
    else:
        spec = {"type": "files", **entry["files"]}
    if entry.get("max_documents"):
        spec["max_documents"] = entry["max_documents"]
    return spec


def strip_finetune_keys(entry: Mapping[str, Any]) -> dict:
    """The parts of a model entry that define the model."""
    return {k: v for k, v in entry.items() if k not in FINETUNE_ONLY_KEYS}


def load_plan(config: dict, schema: str | os.PathLike | dict) -> Plan:
    """Validate `config` (in place, filling defaults) and build its plan."""
    validate_config(config, schema)
    # defaults are filled by reference to the schema's objects: make every entry independent
    config.update(copy.deepcopy(dict(config)))
    return Plan(config)


def job_config(obj: Any) -> str:
    """A job's `job_config` param: canonical JSON."""
    return canonical_json(obj)

