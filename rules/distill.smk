# Distillation: one job per student. On a cluster the profile gives this rule several GPUs
# (resource `gpu`) and the job launches `torchrun --nproc_per_node <gpu>`; checkpoints live
# outside the declared output (Plan.checkpoint_dir), so a restarted job (retry, time limit,
# preemption) resumes where the last one stopped.


rule distill:
    input:
        inputs("distill_inputs", "student"),
    output:
        directory("results/students/{student}"),
    params:
        job_config=job("distill_job", "student"),
    log:
        "logs/distill/{student}.log",
    benchmark:
        "benchmarks/distill/{student}.tsv"
    threads: 1
    priority: 50  # before fine-tuning runs: every student's runs wait for it (see pretrain_teacher)
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/distill.py"
