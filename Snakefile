# The MiniALBERT experiment workflow: corpora -> tokenizers -> windows -> teachers ->
# distilled students -> fine-tuning (model x task x mode x lr x seed) -> tables and plot.
#
#   snakemake                                            # the CPU demo (config.yaml, profiles/default)
#   snakemake --workflow-profile profiles/slurm --configfile configs/paper-general.yaml
#
# A --configfile replaces config.yaml instead of being merged into it, so the demo's
# entries never leak into a real experiment.

import os
import re

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:
    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"


report: "report/workflow.rst"



include: "rules/data.smk"
include: "rules/teachers.smk"
include: "rules/distill.smk"
include: "rules/finetune.smk"
include: "rules/report.smk"
include: "rules/exits.smk"


rule all:
    input:
        SUMMARY_OUTPUTS,
        EXITS_OUTPUTS,
    default_target: True
