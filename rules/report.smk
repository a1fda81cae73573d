# Efficiency measurements and the aggregation into tables, a plot and the Snakemake report.

SUMMARY = PLAN.summary_dir  # results/summary unless report.summary_dir says otherwise
# logs/aggregate/aggregate.log, or logs/aggregate/<subdir>/aggregate.log for results/summary/<subdir>
AGGREGATE_LOG = os.path.normpath(os.path.join("logs/aggregate", os.path.relpath(SUMMARY, "results/summary"),
                                              "aggregate.log"))
SUMMARY_OUTPUTS = [f"{SUMMARY}/{name}" for name in ("runs.csv", "summary.csv", "table.csv", "efficiency.csv",
                                                      "score_vs_params.png", "task_scores.png", "loss_curves.png")]


# like finetune, its script runs the job in a fork of the fork server when run locally
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
        "../workflow_scripts/efficiency.py"


rule aggregate:
    input:
        runs=all_run_metrics,
        efficiency=all_efficiency,
        trained=trained_model_dirs,
    output:
        runs=report(f"{SUMMARY}/runs.csv", caption="../report/runs.rst", category="Tables"),
        summary=report(f"{SUMMARY}/summary.csv", caption="../report/summary.rst", category="Tables"),
        table=report(f"{SUMMARY}/table.csv", caption="../report/table.rst", category="Tables"),
        efficiency=report(f"{SUMMARY}/efficiency.csv", caption="../report/efficiency.rst", category="Tables"),
        plot=report(f"{SUMMARY}/score_vs_params.png", caption="../report/plot.rst", category="Plots"),
        task_plot=report(f"{SUMMARY}/task_scores.png", caption="../report/task_scores.rst", category="Plots"),
        loss_plot=report(f"{SUMMARY}/loss_curves.png", caption="../report/loss_curves.rst", category="Plots"),
    params:
        job_config=job("aggregate_job"),
    log:
        AGGREGATE_LOG,
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/aggregate.py"
