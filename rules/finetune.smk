# Fine-tuning: one job per model x task x mode x learning rate x seed. Its script runs each job
# in a fork of the pre-imported fork server when run locally (minialbert.workflow.launch).


rule finetune:
    input:
        model=model_inputs,
        task="results/tasks/{task}",
    output:
        "results/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}/metrics.json",
    params:
        job_config=job("finetune_job", "model", "task", "mode", "lr", "seed"),
    log:
        "logs/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}.log",
    benchmark:
        "benchmarks/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}.tsv"
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/finetune.py"
