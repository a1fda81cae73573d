"""The Snakemake workflow: end to end on a tiny config, rerun-only-what-changed, config errors,
lint, the paper configs' dry runs, and what each rule (and profile) names exists.

The end-to-end run (tests/workflow_tiny.yaml, about a minute on 2 cores) is shared by the
rerun tests, which edit its config and check which jobs a dry run would schedule.
"""

from __future__ import annotations

import ast
import copy
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
TINY = REPO / "tests" / "workflow_tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, *args: str, config: dict | Path | None = None, timeout: int = 600):
    """Run snakemake on the repository's Snakefile in `workdir`; returns the CompletedProcess."""
    cmd = [*SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(workdir), "--cores", "2"]
    if config is not None:
        if isinstance(config, dict):
            path = workdir / f"config-{time.monotonic_ns()}.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            config = path
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=workdir)


def scheduled(workdir: Path, config) -> set[tuple[str, str]]:
    """(rule, first output or '') of every job a dry run schedules."""
    proc = snakemake(workdir, "--dry-run", config=config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs, rule = set(), None
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line.strip())
        if m:
            if rule is not None:
                jobs.add((rule, ""))
            rule = m.group(1)
            continue
        m = re.match(r"^\s+output: (\S+?),?$", line) or re.match(r"^\s+output: (\S+?), ", line)
        if m and rule is not None:
            jobs.add((rule, m.group(1)))
            rule = None
    if rule is not None:
        jobs.add((rule, ""))
    return jobs


def tiny_config() -> dict:
    return yaml.safe_load(TINY.read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny workflow, run to completion once for this module."""
    workdir = tmp_path_factory.mktemp("workflow")
    start = time.monotonic()
    proc = snakemake(workdir, config=TINY)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    print(f"tiny workflow: {time.monotonic() - start:.0f} s")
    return workdir


# --------------------------------------------------------------------------- end to end


def test_tiny_workflow_end_to_end(tiny_run):
    summary = tiny_run / "results" / "summary"
    for name in ("runs.csv", "summary.csv", "table.csv", "efficiency.csv", "score_vs_params.png"):
        assert (summary / name).stat().st_size > 0, name
    runs = pd.read_csv(summary / "runs.csv")
    # teacher and scratch: full only (modes: [full]); two students: full + adapter; 2 tasks, 1 lr, 1 seed
    assert len(runs) == 2 + 2 + 2 * 2 * 2
    assert set(runs["model"]) == {"teacher", "scratch", "student-a", "student-b"}
    assert runs["config_hash"].notna().all() and runs["model_identity"].notna().all()
    table = pd.read_csv(summary / "table.csv")
    assert len(table) == 6 and {"sst2", "ner", "average", "unique_params", "trainable_params"} <= set(table.columns)
    assert table.set_index("model").loc["scratch", "kind"] == "baseline"
    # scratch: the teacher's architecture and tokenizer, untrained
    from transformers import AutoConfig

    scratch = AutoConfig.from_pretrained(tiny_run / "results" / "baselines" / "scratch" / "model")
    teacher = AutoConfig.from_pretrained(tiny_run / "results" / "teachers" / "teacher" / "model")
    assert scratch.to_diff_dict() == teacher.to_diff_dict()
    assert (tiny_run / "results" / "baselines" / "scratch" / "model" / "tokenizer.json").is_file()
    assert table["average"].notna().all()
    adapter = table[table["mode"] == "adapter"]
    full = table[(table["mode"] == "full") & (table["kind"] == "student")]
    assert (adapter["trainable_params"].to_numpy() < full["trainable_params"].to_numpy()).all()
    efficiency = pd.read_csv(summary / "efficiency.csv")
    assert set(efficiency["model"]) == {"teacher", "scratch", "student-a", "student-b"}
    # every job logged; distilled students and checkpoints where the contracts say
    assert (tiny_run / "logs" / "distill" / "student-a.log").stat().st_size > 0
    assert (tiny_run / "results" / "students" / "student-a" / "model" / "config.json").is_file()
    # a completed distillation removed its checkpoints (a forced rerun starts at step 0): its job config remains
    left = list((tiny_run / "results" / "checkpoints" / "students").glob("student-a-*"))
    assert [p.suffix for p in left] == [".yaml"], left
    # and nothing is left to do
    assert scheduled(tiny_run, TINY) == set()


# --------------------------------------------------------------------------- rerun only what changed


def finetune_outputs(model=None, task=None, seed=None, lr=None, config=None):
    config = config or tiny_config()
    out = set()
    models = {"teacher": ["full"], "scratch": ["full"], "student-a": ["full", "adapter"],
              "student-b": ["full", "adapter"]}
    models.update({m: ["full", "adapter"] for m in config["students"] if m not in models})
    for m, modes in models.items():
        for t in config["tasks"]:
            grid = (config["tasks"][t].get("finetune") or {}).get("lr", config["finetune"]["lr"])
            for mode in modes:
                for lr_ in grid:
                    for s in config["finetune"]["seeds"]:
                        if (model in (None, m)) and (task in (None, t)) and (seed in (None, s)) and (lr in (None, lr_)):
                            out.add(("finetune", f"results/finetune/{m}/{t}/{mode}/lr{lr_:g}_seed{s}/metrics.json"))
    return out


AGGREGATE = {("aggregate", "results/summary/runs.csv"), ("all", "")}


def test_editing_one_variant_reruns_only_that_variant(tiny_run):
    config = tiny_config()
    config["students"]["student-b"]["student"]["embedding_size"] = 24
    expected = {("distill", "results/students/student-b"), ("efficiency", "results/efficiency/student-b.json")}
    expected |= finetune_outputs(model="student-b") | AGGREGATE
    assert scheduled(tiny_run, config) == expected


def test_adding_a_seed_adds_only_new_jobs(tiny_run):
    config = tiny_config()
    config["finetune"]["seeds"] = [0, 1]
    assert scheduled(tiny_run, config) == finetune_outputs(seed=1, config=config) | AGGREGATE


def test_adding_a_variant_adds_only_its_jobs(tiny_run):
    config = tiny_config()
    config["students"]["student-c"] = copy.deepcopy(config["students"]["student-a"])
    config["students"]["student-c"]["student"]["num_recursions"] = 3
    # 3 recursions over the teacher's 2 layers need an explicit map (checked when the DAG is built)
    config["students"]["student-c"]["loss"] = {"layer_map": [0, 1, 1]}
    expected = {("distill", "results/students/student-c"), ("efficiency", "results/efficiency/student-c.json")}
    assert scheduled(tiny_run, config) == expected | finetune_outputs(model="student-c", config=config) | AGGREGATE


def test_editing_one_tasks_lr_grid_touches_only_that_task(tiny_run):
    config = tiny_config()
    config["tasks"]["ner"]["finetune"] = {"lr": [1.0e-3, 3.0e-3]}
    assert scheduled(tiny_run, config) == finetune_outputs(task="ner", lr=3.0e-3, config=config) | AGGREGATE


def test_editing_a_finetune_hyperparameter_of_one_task_reruns_that_task(tiny_run):
    config = tiny_config()
    config["tasks"]["sst2"]["finetune"] = {"epochs": 2}
    assert scheduled(tiny_run, config) == finetune_outputs(task="sst2") | AGGREGATE


def test_retraining_the_teacher_leaves_its_scratch_copy_alone(tiny_run):
    """The scratch baseline depends on the teacher's shape and tokenizer, not on its training."""
    config = tiny_config()
    config["teachers"]["teacher"]["training"]["max_steps"] = 5
    jobs = scheduled(tiny_run, config)
    assert ("pretrain_teacher", "results/teachers/teacher") in jobs
    assert finetune_outputs(model="teacher") <= jobs
    assert not any("scratch" in output for _, output in jobs)
    config["teachers"]["teacher"]["model"]["intermediate_size"] = 96  # a new shape: a new scratch model
    assert ("init_scratch", "results/baselines/scratch") in scheduled(tiny_run, config)


def test_a_models_epochs_factor_reruns_only_its_fine_tuning(tiny_run):
    config = tiny_config()
    config["baselines"]["scratch"]["finetune_epochs_factor"] = 3
    assert scheduled(tiny_run, config) == finetune_outputs(model="scratch") | AGGREGATE


def test_relabelling_a_model_only_reaggregates(tiny_run):
    config = tiny_config()
    config["students"]["student-a"]["label"] = "Student A"
    assert scheduled(tiny_run, config) == AGGREGATE


# --------------------------------------------------------------------------- config errors


def failing(tmp_path, config, *extra):
    proc = snakemake(tmp_path, *extra, config=config)
    assert proc.returncode != 0
    assert not (tmp_path / "results").exists(), "a job ran although the config is invalid"
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_unknown_key_fails_naming_it(tmp_path, dry):
    config = tiny_config()
    config["students"]["student-a"]["student"]["num_recursion"] = 3
    out = failing(tmp_path, config, *(["--dry-run"] if dry else []))
    assert "config key students.student-a.student.num_recursion: unknown key" in out


def test_unknown_top_level_key_fails(tmp_path):
    config = tiny_config()
    config["finetunes"] = {}
    assert "config key finetunes: unknown key" in failing(tmp_path, config)


def test_wrong_type_fails_naming_the_key(tmp_path):
    config = tiny_config()
    config["finetune"]["seeds"] = [0, "one"]
    assert "config key finetune.seeds[1]: expected an integer, got 'one'" in failing(tmp_path, config)


@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_missing_path_fails_naming_the_key(tmp_path, dry):
    config = tiny_config()
    config["tasks"]["mrpc"] = {"spec": {"source": "glue_dir", "glue_task": "mrpc", "path": "/nonexistent/glue/MRPC"}}
    out = failing(tmp_path, config, *(["--dry-run"] if dry else []))
    assert "config key tasks.mrpc.spec.path: path '/nonexistent/glue/MRPC' does not exist" in out


def test_missing_path_under_data_root_fails(tmp_path):
    config = tiny_config()
    config["data_root"] = str(tmp_path / "data")
    config["teachers"]["hub-teacher"] = {"source": "local", "path": "{data_root}/bert"}
    assert f"config key teachers.hub-teacher.path: path '{tmp_path}/data/bert' does not exist" in failing(tmp_path, config)


def test_scratch_baseline_needs_a_pretrained_teacher(tmp_path):
    config = tiny_config()
    config["baselines"]["scratch"]["like"] = "student-a"
    assert "config key baselines.scratch.like: source 'scratch' needs 'like'" in failing(tmp_path, config)


def test_dangling_reference_fails(tmp_path):
    config = tiny_config()
    config["students"]["student-a"]["teacher"] = "bert"
    assert "config key students.student-a.teacher: 'bert' is not a teachers entry" in failing(tmp_path, config)


# --------------------------------------------------------------------------- lint and the paper configs


def test_lint_is_clean(tmp_path):
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--lint"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    block = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)}


@pytest.mark.parametrize(
    "name, extra, expected",
    [
        # + 9 hub fetches (Wikipedia, 8 GLUE tasks) on the submit host
        ("paper-general", [], {"finetune": 672, "distill": 2, "download_model": 4, "import_authors_checkpoint": 1,
                               "prepare_task": 8, "efficiency": 7, "fetch_hub_dataset": 9, "total": 707}),
        ("paper-bio", ["--config", "check_paths=false"],  # 7 models x 6 tasks x 3 seeds x (1 full + 2 adapter lrs)
         {"finetune": 378, "distill": 2, "download_model": 4, "import_authors_checkpoint": 1, "prepare_task": 6,
          "efficiency": 7, "total": 402}),
    ],
)
def test_paper_configs_dry_run_offline(tmp_path, name, extra, expected):
    proc = snakemake(tmp_path, "--dry-run", "--quiet", "rules", *extra, config=REPO / "configs" / f"{name}.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = job_counts(proc.stdout + proc.stderr)
    assert {k: counts.get(k) for k in expected} == expected


def test_the_paper_grid_needs_few_gpu_allocations(tmp_path):
    """672 fine-tuning runs, 8 of one model per allocation (profiles/slurm x-cluster): 84 sbatch jobs."""
    proc = snakemake(tmp_path, "--dry-run", "--workflow-profile", str(REPO / "profiles" / "slurm-local"),
                     config=REPO / "configs" / "paper-general.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    groups = re.findall(r"Group job (finetune-\S+) \(jobs in lexicogr. order\):", proc.stdout + proc.stderr)
    assert len(groups) == 84
    assert {g: groups.count(g) for g in groups} == {f"finetune-{m}": 12 for m in (
        "bert-base-uncased", "distilbert", "tinybert-4l-312d", "albert-base", "authors-minialbert-128",
        "minialbert-128", "minialbert-312")}


def test_paper_bio_placeholder_paths_are_reported_until_edited(tmp_path):
    proc = snakemake(tmp_path, "--dry-run", config=REPO / "configs" / "paper-bio.yaml")
    assert proc.returncode != 0
    assert "config key tasks.ncbi-disease.spec.path: path '/path/to/datasets/NER/NCBI-disease'" in proc.stdout + proc.stderr


# --------------------------------------------------------------------------- what the rules name


def rule_blocks() -> dict[str, str]:
    """rule name -> its text, for every rule in rules/*.smk."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", smk.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            assert name not in blocks, f"rule {name} defined twice"
            blocks[name] = body.split("\n\n\n")[0]  # up to the next top-level statement
    return blocks


def runner_call(script: Path) -> ast.Call:
    """The script's one call `run(snakemake, "<module>:<function>", ...)` (workflow_scripts/_common.py)."""
    calls = [node for node in ast.walk(ast.parse(script.read_text())) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id == "run"]
    assert len(calls) == 1, f"{script.name}: {len(calls)} calls of run(snakemake, target)"
    return calls[0]


def test_every_rule_names_a_script_and_a_runner_that_exist():
    """A rule names what it runs: its script, which names its runner; a renamed or removed script
    or runner fails here, not when a job runs."""
    blocks = rule_blocks()
    assert {"distill", "finetune", "efficiency", "aggregate"} <= set(blocks)
    fork_server_rules = set()
    for rule, body in blocks.items():
        scripts = re.findall(r"^    script:\n        \"([^\"]+)\"$", body, flags=re.M)
        assert len(scripts) == 1, f"rule {rule}: expected one script: directive, found {scripts}"
        script = (REPO / "rules" / scripts[0]).resolve()
        assert script.is_file(), f"rule {rule}: script {scripts[0]} does not exist"
        call = runner_call(script)
        target = call.args[1].value if len(call.args) == 2 and isinstance(call.args[1], ast.Constant) else None
        assert isinstance(target, str), f"{script.name}: the runner is not named by a string literal"
        try:
            runner = pkgutil.resolve_name(target)  # as the job (or the fork server) resolves it
        except (ImportError, AttributeError, ValueError) as e:
            raise AssertionError(f"rule {rule}: {script.name} names {target!r}, which does not exist: {e}") from None
        assert callable(runner), f"rule {rule}: {target} is not callable"
        for kw in call.keywords:
            assert kw.arg == "forkserver" and isinstance(kw.value, ast.Constant), f"{script.name}: {ast.unparse(kw)}"
            if kw.value.value:
                fork_server_rules.add(rule)
    # a job run by the fork server gets only its rule, output, threads and job config
    # (forkserver.describe): these rules' runners need nothing else
    assert fork_server_rules == {"finetune", "efficiency"}


def test_the_profiles_name_existing_rules():
    """Per-rule settings of a renamed rule would silently stop applying."""
    rules = set(rule_blocks()) | {"all"}
    for config in sorted((REPO / "profiles").glob("*/config.yaml")):
        profile = yaml.safe_load(config.read_text())
        for key in ("set-threads", "set-resources"):
            unknown = set(profile.get(key) or {}) - rules
            assert not unknown, f"{config.relative_to(REPO)}: {key} names no rule: {sorted(unknown)}"
