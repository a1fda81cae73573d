# Config validation, parse-time checks and the helper functions the rules call.
#
# Everything here runs when the DAG is built, so it must stay cheap and must never touch the
# network: hub names are only written into job configs, the jobs themselves download.
#
# "Rerun only what changed": every job gets one param, `job_config`, the canonical JSON of
# exactly the settings that determine its output, including the identity (a hash of the
# resolved config chain) of every upstream artefact it reads. Snakemake's params rerun
# trigger (on by default) then reruns a job iff its own config or an upstream config
# changed, and nothing else. Library code is deliberately not an input of any job: after
# changing it, rerun what you want with `--forcerun <rule>` (see the README).

import copy
import glob
import os
import re

from snakemake.exceptions import WorkflowError



def _load_minialbert_utils():
    """minialbert.utils without importing the package (whose __init__ pulls in torch and
    transformers: seconds per DAG build, on every `snakemake` call)."""
    import importlib.util

    package = importlib.util.find_spec("minialbert")
    if package is None or not package.submodule_search_locations:
        raise WorkflowError("the minialbert package is not installed: run `pip install -e .` first")
    path = os.path.join(list(package.submodule_search_locations)[0], "utils.py")
    spec = importlib.util.spec_from_file_location("_minialbert_utils", path)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


_utils = _load_minialbert_utils()
canonical_json, config_hash = _utils.canonical_json, _utils.config_hash

DEMO_DIR = "results/demo"
SOFTWARE_ENV = "../envs/minialbert.yaml"  # relative to rules/, used with --sdm conda
NAME_RE = "[A-Za-z0-9][A-Za-z0-9._-]*"
MODES = ("full", "adapter")


# --------------------------------------------------------------------------- validation


def _dotted(path):
    """['students', 'a', 'loss'] -> 'students.a.loss' (list indices as [i])."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate_config(config, schema):
    """validate() with JSON-schema defaults, re-raised with the offending key spelled out."""
    import jsonschema

    # `--config check_paths=false` arrives as a string
    if str(config.get("check_paths")).lower() in ("true", "false"):
        config["check_paths"] = str(config["check_paths"]).lower() == "true"
    try:
        validate(config, schema=schema)
    except WorkflowError as e:
        if not isinstance(e.__context__, jsonschema.exceptions.ValidationError):
            raise
        # for oneOf/anyOf, best_match descends to the alternative that came closest
        err = jsonschema.exceptions.best_match([e.__context__])
        key = _dotted(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            unknown = sorted(k for k in err.instance if k not in allowed)
            msg = (
                f"config key {_dotted(list(err.absolute_path) + [unknown[0]])}: unknown key "
                f"(allowed under {key}: {', '.join(sorted(allowed))})"
            )
        else:
            msg = f"config key {key}: {err.message}"
        raise WorkflowError(f"invalid config: {msg}") from None
    # validate() fills defaults by reference to the schema's default objects; make every
    # entry independent before the helpers below read it.
    config.update(copy.deepcopy(dict(config)))


class ConfigCheck:
    """Collects cross-reference and path problems so that one run reports all of them."""

    def __init__(self):
        self.problems = []

    def fail(self, key, message):
        self.problems.append(f"config key {key}: {message}")

    def raise_if_any(self):
        if self.problems:
            raise WorkflowError(
                "invalid config (nothing was run):\n  " + "\n  ".join(self.problems)
            )


def expand_path(value):
    """Substitute '{data_root}' and '{demo}' in a config path."""
    if not isinstance(value, str):
        return value
    if "{data_root}" in value:
        if not config.get("data_root"):
            raise WorkflowError(f"config path '{value}' uses {{data_root}} but data_root is not set")
        value = value.replace("{data_root}", str(config["data_root"]).rstrip("/"))
    return value.replace("{demo}", DEMO_DIR)


def expand_spec(obj):
    """expand_path() applied to every string of a nested mapping/list."""
    if isinstance(obj, dict):
        return {k: expand_spec(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_spec(v) for v in obj]
    return expand_path(obj)


def uses_demo(obj):
    """True if some string of a nested config value refers to the generated demo world."""
    return "{demo}" in canonical_json(obj)


def looks_local(value):
    """A model reference that is a filesystem path rather than a hub name."""
    return os.path.isabs(value) or value.startswith((".", "~", "{data_root}", "{demo}"))


def check_local_path(check, key, value):
    if not config["check_paths"] or value.startswith(DEMO_DIR):
        return
    matches = glob.glob(os.path.expanduser(value)) if glob.has_magic(value) else None
    if (matches is not None and not matches) or (matches is None and not os.path.exists(os.path.expanduser(value))):
        check.fail(
            key,
            f"path '{value}' does not exist (edit the path or data_root in your config; "
            "`--config check_paths=false` skips this check, e.g. to preview a DAG with `-n`)",
        )


# --------------------------------------------------------------------------- the model registry


def strip_workflow_keys(entry):
    """The parts of a model entry that define the model (label, modes and the fine-tuning epochs
    factor only affect its fine-tuning runs and the tables)."""
    return {k: v for k, v in entry.items() if k not in ("label", "modes", "finetune_epochs_factor")}


def corpus_identity(name):
    entry = config["corpora"][name]
    demo = (config.get("demo") or {}) if entry["source"] == "demo" else None
    return config_hash({"corpus": expand_spec(entry), "demo": demo})


def tokenizer_identity(name):
    entry = config["tokenizers"][name]
    upstream = None
    if entry["source"] == "train":
        upstream = corpus_identity(entry["corpus"])
    elif entry["source"] == "model":
        model = config["teachers"].get(entry["model"]) or config["baselines"][entry["model"]]
        upstream = config_hash(strip_workflow_keys(expand_spec(model)))
    return config_hash({"tokenizer": expand_spec(entry), "upstream": upstream})


def stored_model_dir(name):
    """(dir, inputs) of a teachers/baselines entry that is not trained here."""
    entry = config["teachers"].get(name) or config["baselines"][name]
    if entry["source"] == "hub":
        return f"results/downloads/{name}", [f"results/downloads/{name}"]
    if entry["source"] == "authors":
        return f"results/imports/{name}", [f"results/imports/{name}"]
    return expand_path(entry["path"]), []


def tokenizer_ref(name):
    """(what the commands are given, the files a job depends on) for a tokenizer entry."""
    entry = config["tokenizers"][name]
    if entry["source"] == "hub":
        return entry["name"], []
    if entry["source"] == "local":
        return expand_path(entry["path"]), []
    if entry["source"] == "model":
        return stored_model_dir(entry["model"])
    return f"results/tokenizers/{name}", [f"results/tokenizers/{name}"]


def windows_identity(name):
    entry = config["windows"][name]
    return config_hash(
        {
            "windows": entry,
            "corpus": corpus_identity(entry["corpus"]),
            "tokenizer": tokenizer_identity(entry["tokenizer"]),
        }
    )


def build_registry(check):
    """name -> {kind, dir, inputs, identity, label, modes} for every model that can be a row."""
    models = {}

    def add(name, key, **info):
        if name in models:
            check.fail(key, f"model name '{name}' is used twice (teachers, students and baselines share one namespace)")
        models[name] = info

    for name, entry in config["teachers"].items():
        key = f"teachers.{name}"
        src = entry["source"]
        if src == "pretrain":
            for field in ("tokenizer", "windows"):
                if field not in entry:
                    check.fail(key, f"source 'pretrain' needs '{field}'")
            if "tokenizer" not in entry or "windows" not in entry:
                continue
            identity = config_hash(
                {
                    "teacher": strip_workflow_keys(entry),
                    "tokenizer": tokenizer_identity(entry["tokenizer"]),
                    "windows": windows_identity(entry["windows"]),
                }
            )
            add(name, key, kind="teacher", dir=f"results/teachers/{name}/model",
                inputs=[f"results/teachers/{name}"], identity=identity)
        else:
            needed = "name" if src == "hub" else "path"
            if needed not in entry:
                check.fail(key, f"source '{src}' needs '{needed}'")
                continue
            if src == "local":
                check_local_path(check, f"{key}.path", expand_path(entry["path"]))
            model_dir, inputs = stored_model_dir(name)
            add(name, key, kind="teacher", dir=model_dir, inputs=inputs,
                identity=config_hash(strip_workflow_keys(expand_spec(entry))))

    for name, entry in config["baselines"].items():
        key = f"baselines.{name}"
        src = entry["source"]
        if src == "scratch":
            like = config["teachers"].get(entry.get("like"))
            if like is None or like["source"] != "pretrain" or name == entry.get("like"):
                check.fail(f"{key}.like", f"source 'scratch' needs 'like': a teachers entry with source pretrain, "
                                          f"got {entry.get('like')!r}")
                continue
            identity = config_hash({"baseline": strip_workflow_keys(entry), "model": like.get("model") or {},
                                    "tokenizer": tokenizer_identity(like["tokenizer"])})
            add(name, key, kind="baseline", dir=f"results/baselines/{name}/model",
                inputs=[f"results/baselines/{name}"], identity=identity)
            continue
        if src == "local" or (src == "authors" and "path" in entry):
            if "path" not in entry:
                check.fail(key, "source 'local' needs 'path'")
                continue
            check_local_path(check, f"{key}.path", expand_path(entry["path"]))
        elif "name" not in entry:
            check.fail(key, f"source '{src}' needs 'name' (a hub model id) or 'path'")
            continue
        model_dir, inputs = stored_model_dir(name)
        add(name, key, kind="baseline", dir=model_dir, inputs=inputs,
            identity=config_hash(strip_workflow_keys(expand_spec(entry))))

    # students last: their identity includes their teacher's
    for name, entry in config["students"].items():
        key = f"students.{name}"
        if entry["teacher"] not in models or models[entry["teacher"]]["kind"] != "teacher":
            check.fail(f"{key}.teacher", f"'{entry['teacher']}' is not a teachers entry")
            continue
        job = distill_config(name, entry, models)
        identity = config_hash({"distill": job, "teacher": models[entry["teacher"]]["identity"],
                                "windows": windows_identity(entry["windows"]),
                                "embeddings_from": embeddings_identity(entry, models)})
        add(name, key, kind="student", dir=f"results/students/{name}/model",
            inputs=[f"results/students/{name}"], identity=identity)

    for name, info in models.items():
        entry = config["teachers"].get(name) or config["students"].get(name) or config["baselines"].get(name)
        info["name"] = name
        info["label"] = entry.get("label", name)
        info["modes"] = list(entry.get("modes") or config["finetune"]["modes"])
        info["epochs_factor"] = entry.get("finetune_epochs_factor", 1)
    return models


def embeddings_ref(entry, models):
    """embeddings_from resolved: a configured model's dir, a local path, or a hub name."""
    ref = (entry.get("student") or {}).get("embeddings_from")
    if ref is None:
        return None, []
    if ref in models:
        return models[ref]["dir"], list(models[ref]["inputs"])
    return expand_path(ref), []


def embeddings_identity(entry, models):
    ref = (entry.get("student") or {}).get("embeddings_from")
    return models[ref]["identity"] if ref in models else ref


def distill_config(name, entry, models):
    """The YAML given to `minialbert distill` (checkpoint_dir added by the rule)."""
    tokenizer = tokenizer_ref(entry["tokenizer"])[0] if "tokenizer" in entry else None
    student = dict(entry.get("student") or {})
    if "embeddings_from" in student:
        student["embeddings_from"] = embeddings_ref(entry, models)[0]
    job = {
        "teacher": models[entry["teacher"]]["dir"],
        "windows": f"results/windows/{entry['windows']}",
        "student": student,
        "loss": entry.get("loss") or {},
        "training": entry.get("training") or {},
    }
    if tokenizer is not None:
        job["tokenizer"] = tokenizer
    return job


def check_references(check):
    """Every name a config entry points at must exist; local paths must exist."""
    for name, entry in config["corpora"].items():
        key = f"corpora.{name}"
        if entry["source"] in ("hub", "files") and entry["source"] not in entry:
            check.fail(key, f"source '{entry['source']}' needs a '{entry['source']}' mapping")
        if entry["source"] == "files" and "files" in entry:
            for i, p in enumerate(entry["files"]["paths"]):
                check_local_path(check, f"{key}.files.paths[{i}]", expand_path(p))
    for name, entry in config["tokenizers"].items():
        key = f"tokenizers.{name}"
        needed = {"hub": "name", "local": "path", "train": "corpus", "model": "model"}[entry["source"]]
        if needed not in entry:
            check.fail(key, f"source '{entry['source']}' needs '{needed}'")
        elif entry["source"] == "model":
            model = config["teachers"].get(entry["model"]) or config["baselines"].get(entry["model"])
            if model is None or model["source"] in ("pretrain", "scratch"):
                check.fail(f"{key}.model", f"'{entry['model']}' is not a hub, local or authors teachers/baselines entry")
        elif entry["source"] == "local":
            check_local_path(check, f"{key}.path", expand_path(entry["path"]))
        elif entry["source"] == "train" and entry["corpus"] not in config["corpora"]:
            check.fail(f"{key}.corpus", f"'{entry['corpus']}' is not a corpora entry")
    for name, entry in config["windows"].items():
        key = f"windows.{name}"
        if entry["corpus"] not in config["corpora"]:
            check.fail(f"{key}.corpus", f"'{entry['corpus']}' is not a corpora entry")
        if entry["tokenizer"] not in config["tokenizers"]:
            check.fail(f"{key}.tokenizer", f"'{entry['tokenizer']}' is not a tokenizers entry")
    for kind in ("teachers", "students"):
        for name, entry in config[kind].items():
            for field, table in (("windows", "windows"), ("tokenizer", "tokenizers")):
                if field in entry and entry[field] not in config[table]:
                    check.fail(f"{kind}.{name}.{field}", f"'{entry[field]}' is not a {table} entry")
    for name, entry in config["students"].items():
        ref = (entry.get("student") or {}).get("embeddings_from")
        is_model = ref in config["teachers"] or ref in config["baselines"] or ref in config["students"]
        if ref and not is_model and looks_local(ref):
            check_local_path(check, f"students.{name}.student.embeddings_from", expand_path(ref))
    for name, entry in config["tasks"].items():
        spec = entry["spec"]
        for field in ("path",):
            if isinstance(spec.get(field), str) and not uses_demo(spec[field]):
                check_local_path(check, f"tasks.{name}.spec.{field}", expand_path(spec[field]))
        for split, p in (spec.get("files") or {}).items():
            if isinstance(p, str) and not uses_demo(p):
                check_local_path(check, f"tasks.{name}.spec.files.{split}", expand_path(p))


# --------------------------------------------------------------------------- fine-tuning runs


def lr_label(lr):
    """The learning rate as it appears in paths: 5e-05, 0.0005, 0.001."""
    return format(float(lr), "g")


def finetune_settings(task):
    """finetune defaults overlaid with the task's own overrides."""
    settings = {k: v for k, v in config["finetune"].items() if k not in ("models", "modes")}
    settings.update(config["tasks"][task].get("finetune") or {})
    return settings


def lr_grid(task, mode):
    settings = finetune_settings(task)
    grid = settings["lr"]
    if isinstance(grid, dict):
        if mode in grid:
            return grid[mode]
        default = config["finetune"]["lr"]
        if isinstance(default, list):
            return default
        if mode in default:
            return default[mode]
        raise WorkflowError(f"config key tasks.{task}.finetune.lr: no learning rates for mode '{mode}'")
    return grid


def finetune_models(check):
    names = config["finetune"]["models"]
    if names is None:
        return list(MODELS)
    for i, n in enumerate(names):
        if n not in MODELS:
            check.fail(f"finetune.models[{i}]", f"'{n}' is not a teachers, students or baselines entry")
    return [n for n in names if n in MODELS]


def enumerate_runs(check):
    """(model, task, mode, lr label, seed) -> the run's settings, in a stable order."""
    runs = {}
    for model in finetune_models(check):
        for task in config["tasks"]:
            settings = finetune_settings(task)
            for mode in MODELS[model]["modes"]:
                for lr in lr_grid(task, mode):
                    for seed in settings["seeds"]:
                        runs[(model, task, mode, lr_label(lr), str(seed))] = dict(
                            lr=float(lr), seed=int(seed),
                            **{k: settings[k] for k in ("batch_size", "max_length", "scheduler", "weight_decay",
                                                        "warmup")},
                            epochs=settings["epochs"] * MODELS[model]["epochs_factor"],
                        )
    return runs


def run_dir(model, task, mode, lr, seed):
    return f"results/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}"


def all_run_metrics(wildcards=None):
    return [f"{run_dir(*key)}/metrics.json" for key in RUNS]


def all_efficiency(wildcards=None):
    return [f"results/efficiency/{m}.json" for m in dict.fromkeys(k[0] for k in RUNS)]


# --------------------------------------------------------------------------- per-rule inputs and job configs


def job_config(obj):
    return canonical_json(obj)


def demo_job_config(wildcards):
    return job_config({"demo": config.get("demo") or {}})


def corpus_inputs(wildcards):
    entry = config["corpora"][wildcards.corpus]
    return [DEMO_DIR] if entry["source"] == "demo" else []


def corpus_job_config(wildcards):
    entry = expand_spec(config["corpora"][wildcards.corpus])
    return job_config({"name": wildcards.corpus, "corpus": entry, "identity": corpus_identity(wildcards.corpus),
                       "demo_corpus": f"{DEMO_DIR}/corpus/corpus.txt" if entry["source"] == "demo" else None})


def tokenizer_inputs(wildcards):
    return [f"results/corpora/{config['tokenizers'][wildcards.tokenizer]['corpus']}"]


def tokenizer_job_config(wildcards):
    entry = config["tokenizers"][wildcards.tokenizer]
    return job_config({"name": wildcards.tokenizer, "corpus_dir": f"results/corpora/{entry['corpus']}",
                       "vocab_size": entry["vocab_size"], "lowercase": entry["lowercase"],
                       "identity": tokenizer_identity(wildcards.tokenizer)})


def windows_inputs(wildcards):
    entry = config["windows"][wildcards.windows]
    return [f"results/corpora/{entry['corpus']}"] + tokenizer_ref(entry["tokenizer"])[1]


def windows_job_config(wildcards):
    entry = config["windows"][wildcards.windows]
    return job_config({"name": wildcards.windows, "corpus_dir": f"results/corpora/{entry['corpus']}",
                       "tokenizer": tokenizer_ref(entry["tokenizer"])[0],
                       **{k: entry[k] for k in ("max_length", "stride", "max_windows_per_document", "seed", "num_proc")},
                       "identity": windows_identity(wildcards.windows)})


def checkpoint_dir(kind, name):
    """Stable per (entry, resolved config), outside the job's declared output, so a failed or
    killed job's checkpoints survive Snakemake's output cleanup and the retry resumes; a
    changed config gets a fresh directory instead of an incompatible checkpoint."""
    return f"results/checkpoints/{kind}/{name}-{MODELS[name]['identity']}"


def pretrain_inputs(wildcards):
    entry = config["teachers"][wildcards.teacher]
    return [f"results/windows/{entry['windows']}"] + tokenizer_ref(entry["tokenizer"])[1]


def pretrain_job_config(wildcards):
    entry = config["teachers"][wildcards.teacher]
    training = dict(entry.get("training") or {})
    training["checkpoint_dir"] = checkpoint_dir("teachers", wildcards.teacher)
    return job_config({
        "name": wildcards.teacher,
        "identity": MODELS[wildcards.teacher]["identity"],
        "command": {"tokenizer": tokenizer_ref(entry["tokenizer"])[0],
                    "windows": f"results/windows/{entry['windows']}",
                    "model": entry.get("model") or {}, "training": training},
    })


def scratch_teacher(name):
    """The pretrained teachers entry whose architecture and tokenizer a scratch baseline copies."""
    return config["teachers"][config["baselines"][name]["like"]]


def scratch_inputs(wildcards):
    return tokenizer_ref(scratch_teacher(wildcards.model)["tokenizer"])[1]


def scratch_job_config(wildcards):
    like = scratch_teacher(wildcards.model)
    return job_config({"name": wildcards.model, "identity": MODELS[wildcards.model]["identity"],
                       "command": {"tokenizer": tokenizer_ref(like["tokenizer"])[0], "model": like.get("model") or {},
                                   "seed": config["baselines"][wildcards.model].get("seed", 0)}})


def download_job_config(wildcards):
    entry = config["teachers"].get(wildcards.model) or config["baselines"][wildcards.model]
    return job_config({"name": entry["name"], "revision": entry.get("revision")})


def import_job_config(wildcards):
    entry = config["baselines"][wildcards.model]
    source = expand_path(entry["path"]) if "path" in entry else entry["name"]
    return job_config({"source": source, "revision": entry.get("revision")})


def import_inputs(wildcards):
    return []


def distill_inputs(wildcards):
    entry = config["students"][wildcards.variant]
    inputs = list(MODELS[entry["teacher"]]["inputs"]) + [f"results/windows/{entry['windows']}"]
    if "tokenizer" in entry:
        inputs += tokenizer_ref(entry["tokenizer"])[1]
    inputs += embeddings_ref(entry, MODELS)[1]
    return list(dict.fromkeys(inputs))


def distill_job_config(wildcards):
    entry = config["students"][wildcards.variant]
    command = distill_config(wildcards.variant, entry, MODELS)
    command["training"] = dict(command["training"], checkpoint_dir=checkpoint_dir("students", wildcards.variant))
    return job_config({"name": wildcards.variant, "identity": MODELS[wildcards.variant]["identity"],
                       "command": command})


def task_identity(task):
    entry = config["tasks"][task]
    demo = (config.get("demo") or {}) if uses_demo(entry["spec"]) else None
    return config_hash({"spec": expand_spec(entry["spec"]), "demo": demo})


def task_inputs(wildcards):
    return [DEMO_DIR] if uses_demo(config["tasks"][wildcards.task]["spec"]) else []


def task_job_config(wildcards):
    spec = expand_spec(config["tasks"][wildcards.task]["spec"])
    spec.setdefault("name", wildcards.task)
    return job_config({"spec": spec, "identity": task_identity(wildcards.task)})


def finetune_model_input(wildcards):
    return MODELS[wildcards.model]["inputs"]


def finetune_job_config(wildcards):
    key = (wildcards.model, wildcards.task, wildcards.mode, wildcards.lr, wildcards.seed)
    if key not in RUNS:
        raise WorkflowError(f"no fine-tuning run {run_dir(*key)} in the config")
    return job_config({
        "model": wildcards.model, "model_dir": MODELS[wildcards.model]["dir"],
        "model_identity": MODELS[wildcards.model]["identity"],
        "task": wildcards.task, "task_dir": f"results/tasks/{wildcards.task}",
        "task_identity": task_identity(wildcards.task),
        "mode": wildcards.mode, **RUNS[key],
    })


def efficiency_job_config(wildcards):
    return job_config({"model": wildcards.model, "model_dir": MODELS[wildcards.model]["dir"],
                       "model_identity": MODELS[wildcards.model]["identity"],
                       **config["report"]["efficiency"]})


def aggregate_job_config(wildcards):
    models = {n: {k: MODELS[n][k] for k in ("kind", "label", "identity")} for n in dict.fromkeys(k[0] for k in RUNS)}
    tasks = {t: {"group": e["group"], "report_split": e["report_split"]} for t, e in config["tasks"].items()}
    return job_config({"models": models, "tasks": tasks})


# --------------------------------------------------------------------------- parse-time checks

MODELS = {}  # name -> {kind, dir, inputs, identity, label, modes}
RUNS = {}  # (model, task, mode, lr label, seed) -> run settings


def prepare_workflow():
    """Cross-check the validated config and build the model registry and the run list."""
    global MODELS, RUNS
    check = ConfigCheck()
    check_references(check)
    check.raise_if_any()  # dangling names would break the registry below
    MODELS = build_registry(check)
    RUNS = enumerate_runs(check)
    check.raise_if_any()

wildcard_constraints:
    corpus=NAME_RE,
    tokenizer=NAME_RE,
    windows=NAME_RE,
    teacher=NAME_RE,
    variant=NAME_RE,
    model=NAME_RE,
    task=NAME_RE,
    mode="full|adapter",
    lr="[0-9][0-9.e+-]*",
    seed="[0-9]+",
