# Fine-tuning: one job per model x task x mode x learning rate x seed, each with its own
# metrics.json, params (a changed run reruns alone) and retries. Run locally, its script runs
# the job in a fork of the pre-imported fork server (minialbert.workflow.launch).
#
# On a cluster the runs of one model are packed: the group below plus the profile's
# `group-components` (x-cluster: finetune_runs_per_allocation) make Snakemake submit up to that
# many runs of one model as one GPU allocation, which runs them one after another (the profile
# scopes `gpu` per allocation, at most 1). One group per model, so an allocation waits only for
# its own model. A packed allocation that fails or is cancelled is retried whole; its runs that
# had finished restore their result instead of training again (jobs.finetune).


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
    group:
        "finetune-{model}"
    threads: 1
    priority: finetune_priority  # longest runs first (Plan.finetune_priority)
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/finetune.py"
