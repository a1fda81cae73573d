# Efficiency measurements and the aggregation into tables, a plot and the Snakemake report.

SUMMARY_OUTPUTS = [
    "results/summary/runs.csv",
    "results/summary/summary.csv",
    "results/summary/table.csv",
    "results/summary/efficiency.csv",
    "results/summary/score_vs_params.png",
    "results/summary/task_scores.png",
    "results/summary/loss_curves.png",
]


rule efficiency:
    input:
        model_inputs,
    output:
        "results/efficiency/{model}.json",
    params:
        job_config=job("efficiency_job", "model"),
    log:
        "logs/efficiency/{model}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/run_job.py"


rule aggregate:
    input:
        runs=all_run_metrics,
        efficiency=all_efficiency,
        trained=trained_model_dirs,
    output:
        runs=report("results/summary/runs.csv", caption="../report/runs.rst", category="Tables"),
        summary=report("results/summary/summary.csv", caption="../report/summary.rst", category="Tables"),
        table=report("results/summary/table.csv", caption="../report/table.rst", category="Tables"),
        efficiency=report("results/summary/efficiency.csv", caption="../report/efficiency.rst", category="Tables"),
        plot=report("results/summary/score_vs_params.png", caption="../report/plot.rst", category="Plots"),
        task_plot=report("results/summary/task_scores.png", caption="../report/task_scores.rst", category="Plots"),
        loss_plot=report("results/summary/loss_curves.png", caption="../report/loss_curves.rst", category="Plots"),
    params:
        job_config=job("aggregate_job"),
    log:
        "logs/aggregate/aggregate.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/run_job.py"
