# Config validation and the helpers the rules call: one-line lookups into the plan.
#
# Everything is computed by minialbert.workflow.plan (library code, unit-tested without
# Snakemake) when the DAG is built; it never touches the network. Each job gets one param,
# `job_config`: the canonical JSON of what determines its output, upstream identities
# included, so Snakemake's params trigger reruns exactly what a config edit changed.

import sys

from snakemake.exceptions import WorkflowError

from minialbert.utils import ConfigError
from minialbert.workflow.plan import DEMO_DIR, NAME_RE, job_config, load_plan, run_dir
from minialbert.workflow.profile_check import check_profiles_in_use


def build_plan(config, schema):
    try:
        return load_plan(config, os.path.join(workflow.basedir, schema))
    except ConfigError as e:
        raise WorkflowError(str(e)) from None


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def job(method, *fields):
    """A params function: the job config PLAN.<method>(wildcards.<field>, ...) as canonical JSON."""
    return lambda wildcards: job_config(getattr(PLAN, method)(*(wildcards[f] for f in fields)))


def inputs(method, field):
    return lambda wildcards: getattr(PLAN, method)(wildcards[field])


SOFTWARE_ENV = "../envs/minialbert.yaml"  # relative to rules/, used with --sdm conda
try:  # a cluster profile's unedited <placeholders> fail here, before anything is queued
    check_profiles_in_use(sys.argv, os.environ, workflow.basedir)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
PLAN = build_plan(config, "schemas/config.schema.yaml")
MODELS = PLAN.models


def model_inputs(wildcards):
    return MODELS[wildcards.model].inputs


def finetune_priority(wildcards):
    return PLAN.finetune_priority(wildcards.model, wildcards.task, wildcards.mode, wildcards.lr, wildcards.seed)


def all_run_metrics(wildcards):
    return PLAN.run_metrics()


def trained_model_dirs(wildcards):
    return [MODELS[m].inputs[0] for m in PLAN.trained_models()]


def exit_timing_inputs(wildcards):
    return PLAN.exit_timing_inputs(wildcards.model, wildcards.task, wildcards.mode, wildcards.lr, wildcards.seed)


def all_exit_timings(wildcards):
    return [f"{run_dir(*key)}/timing.json" for key in PLAN.exit_runs()]


def all_efficiency(wildcards):
    return [f"results/efficiency/{m}.json" for m in PLAN.finetuned_models()]


wildcard_constraints:
    corpus=NAME_RE,
    tokenizer=NAME_RE,
    windows=NAME_RE,
    teacher=NAME_RE,
    student=NAME_RE,
    model=NAME_RE,
    task=NAME_RE,
    mode="full|adapter",
    lr="[0-9][0-9.e+-]*",
    seed="[0-9]+",
