# Distillation: one job per student variant. On a cluster the profile gives this rule
# several GPUs (resource `gpu`) and the script launches `torchrun --nproc_per_node <gpu>`;
# checkpoints live outside the declared output (see checkpoint_dir in common.smk), so a
# restarted job (retry, time limit, preemption) resumes where the last one stopped.


rule distill:
    input:
        distill_inputs,
    output:
        directory("results/students/{variant}"),
    params:
        job_config=distill_job_config,
    log:
        "logs/distill/{variant}.log",
    benchmark:
        "benchmarks/distill/{variant}.tsv"
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/train.py"
