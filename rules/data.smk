# Data preparation: the generated demo world, corpora, tokenizers, windows, task splits.
#
# A corpus or task read from the hub takes two jobs: fetch_hub_dataset, a local rule (the
# submit host has the internet, compute nodes often do not), fills the Hugging Face cache
# (HF_HOME: the config's hf_home) with the dataset config's files; then ingest_corpus or
# prepare_task, anywhere, reads that cache with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1.

localrules:
    fetch_hub_dataset,


rule fetch_hub_dataset:
    output:
        "results/hub/{kind}/{name}.json",
    params:
        job_config=job("fetch_job", "kind", "name"),
    log:
        "logs/fetch_hub_dataset/{kind}/{name}.log",
    wildcard_constraints:
        kind="corpora|tasks",
        name=NAME_RE,
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/fetch_hub_dataset.py"


rule make_demo:
    output:
        directory(DEMO_DIR),
    params:
        job_config=job("demo_job"),
    log:
        "logs/make_demo/demo.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/make_demo.py"


rule ingest_corpus:
    input:
        inputs("corpus_inputs", "corpus"),
    output:
        directory("results/corpora/{corpus}"),
    params:
        job_config=job("corpus_job", "corpus"),
    log:
        "logs/ingest_corpus/{corpus}.log",
    benchmark:
        "benchmarks/ingest_corpus/{corpus}.tsv"
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/ingest_corpus.py"


rule train_tokenizer:
    input:
        inputs("tokenizer_inputs", "tokenizer"),
    output:
        directory("results/tokenizers/{tokenizer}"),
    params:
        job_config=job("tokenizer_job", "tokenizer"),
    log:
        "logs/train_tokenizer/{tokenizer}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/train_tokenizer.py"


rule make_windows:
    input:
        inputs("windows_inputs", "windows"),
    output:
        directory("results/windows/{windows}"),
    params:
        job_config=job("windows_job", "windows"),
    log:
        "logs/make_windows/{windows}.log",
    benchmark:
        "benchmarks/make_windows/{windows}.tsv"
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/make_windows.py"


rule prepare_task:
    input:
        inputs("task_inputs", "task"),
    output:
        directory("results/tasks/{task}"),
    params:
        job_config=job("task_job", "task"),
    log:
        "logs/prepare_task/{task}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/prepare_task.py"
