# Data preparation: the generated demo world, corpora, tokenizers, windows, task splits.


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
