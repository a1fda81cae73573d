# Adaptive depth (finetune.exits): each fine-tuning run with exits is timed on its own (one
# thread, configurations interleaved), then all of them are summarised in exits.csv and a
# score-against-latency plot per task. Nothing here runs when no run has exits.

EXIT_RUN_DIR = "results/finetune/{model}/{task}/{mode}/lr{lr}_seed{seed}"
EXITS_OUTPUTS = (
    [f"{SUMMARY}/exits.csv"] + [f"{SUMMARY}/score_vs_latency_{task}.png" for task in PLAN.exit_tasks()]
    if PLAN.exit_runs() else []
)


rule exit_timing:
    input:
        exit_timing_inputs,
    output:
        f"{EXIT_RUN_DIR}/timing.json",
    params:
        job_config=job("exit_timing_job", "model", "task", "mode", "lr", "seed"),
    log:
        "logs/exit_timing/{model}/{task}/{mode}/lr{lr}_seed{seed}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/exit_timing.py"


rule exits_summary:
    input:
        timings=all_exit_timings,
        runs=lambda wildcards: [f"{run_dir(*key)}/metrics.json" for key in PLAN.runs],
    output:
        table=report(f"{SUMMARY}/exits.csv", caption="../report/exits.rst", category="Adaptive depth"),
        plots=[report(f"{SUMMARY}/score_vs_latency_{task}.png", caption="../report/score_vs_latency.rst",
                      category="Adaptive depth") for task in PLAN.exit_tasks()],
    params:
        job_config=job("exits_summary_job"),
    log:
        os.path.join(os.path.dirname(AGGREGATE_LOG), "exits_summary.log"),
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/exits_summary.py"
