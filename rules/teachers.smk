# Teachers and baselines: pretrained from scratch (the demo), downloaded from the hub,
# converted from the MiniALBERT authors' published layout, or a teacher's architecture left
# untrained (source `scratch`: trained on each task alone). Every model the workflow makes or
# fetches lives at results/{teachers,students,baselines}/<name>/model; each rule below only
# matches the names of its own source. Downloads happen in jobs, never while the DAG is built.

# Hub downloads need the internet, which cluster compute nodes often lack: run them on the
# submit host; so does saving an untrained model (seconds, not worth a queue wait).
localrules:
    download_model,
    import_authors_checkpoint,
    init_scratch,
    init_architecture,


# Training jobs go first: everything downstream waits for them, while fine-tuning runs can fill
# any idle core (on the demo, distillations queued behind fine-tuning lengthened the run by minutes).
rule pretrain_teacher:
    input:
        inputs("pretrain_inputs", "teacher"),
    output:
        directory("results/teachers/{teacher}"),
    params:
        job_config=job("pretrain_job", "teacher"),
    log:
        "logs/pretrain_teacher/{teacher}.log",
    benchmark:
        "benchmarks/pretrain_teacher/{teacher}.tsv"
    wildcard_constraints:
        teacher=one_of(PLAN.names("teacher", "pretrain")),
    threads: 1
    priority: 100
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/pretrain_teacher.py"


rule init_scratch:
    input:
        inputs("scratch_inputs", "model"),
    output:
        directory("results/baselines/{model}"),
    params:
        job_config=job("scratch_job", "model"),
    log:
        "logs/init_scratch/{model}.log",
    wildcard_constraints:
        model=one_of(PLAN.names("baseline", "scratch")),
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/init_scratch.py"


# The same, for students that need only their teacher's architecture and tokenizer (the MLM-only
# ablation: no loss term reads the teacher): their distillation need not wait for the pretraining.
rule init_architecture:
    input:
        inputs("architecture_inputs", "teacher"),
    output:
        directory("results/architectures/{teacher}"),
    params:
        job_config=job("architecture_job", "teacher"),
    log:
        "logs/init_architecture/{teacher}.log",
    wildcard_constraints:
        teacher=one_of(PLAN.names("teacher", "pretrain")),
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/init_scratch.py"


rule download_model:
    output:
        directory("results/{kind}s/{model}"),
    params:
        job_config=job("download_job", "model"),
    log:
        "logs/download_model/{kind}s/{model}.log",
    wildcard_constraints:
        kind="teacher|baseline",
        model=one_of(PLAN.names("teacher", "hub") + PLAN.names("baseline", "hub")),
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/download_model.py"


rule import_authors_checkpoint:
    input:
        inputs("import_inputs", "model"),
    output:
        directory("results/baselines/{model}"),
    params:
        job_config=job("import_job", "model"),
    log:
        "logs/import_authors_checkpoint/{model}.log",
    wildcard_constraints:
        model=one_of(PLAN.names("baseline", "authors")),
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/import_authors_checkpoint.py"
