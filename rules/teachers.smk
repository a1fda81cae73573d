# Teachers and comparison checkpoints: pretrained from scratch (the demo), downloaded from
# the hub, converted from the MiniALBERT authors' published layout, or a teacher's
# architecture left untrained (the `scratch` baseline: trained on each task alone). Downloads
# happen in jobs, never while the DAG is built.

# Hub downloads need the internet, which cluster compute nodes often lack: run them on the
# submit host; so does saving an untrained model (seconds, not worth a queue wait).
localrules:
    download_model,
    import_authors_checkpoint,
    init_scratch_model,


rule pretrain_teacher:
    input:
        pretrain_inputs,
    output:
        directory("results/teachers/{teacher}"),
    params:
        job_config=pretrain_job_config,
    log:
        "logs/pretrain_teacher/{teacher}.log",
    benchmark:
        "benchmarks/pretrain_teacher/{teacher}.tsv"
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/train.py"


rule init_scratch_model:
    input:
        scratch_inputs,
    output:
        directory("results/baselines/{model}"),
    params:
        job_config=scratch_job_config,
    log:
        "logs/init_scratch_model/{model}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/init_teacher.py"


rule download_model:
    output:
        directory("results/downloads/{model}"),
    params:
        job_config=download_job_config,
    log:
        "logs/download_model/{model}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/download_model.py"


rule import_authors_checkpoint:
    input:
        import_inputs,
    output:
        directory("results/imports/{model}"),
    params:
        job_config=import_job_config,
    log:
        "logs/import_authors_checkpoint/{model}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/import_authors_checkpoint.py"
