# Data preparation: the generated demo world, corpora, tokenizers, windows, task splits.


rule make_demo:
    output:
        directory(DEMO_DIR),
    params:
        job_config=demo_job_config,
    log:
        "logs/make_demo/demo.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/make_demo.py"


rule ingest_corpus:
    input:
        corpus_inputs,
    output:
        directory("results/corpora/{corpus}"),
    params:
        job_config=corpus_job_config,
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
        tokenizer_inputs,
    output:
        directory("results/tokenizers/{tokenizer}"),
    params:
        job_config=tokenizer_job_config,
    log:
        "logs/train_tokenizer/{tokenizer}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/train_tokenizer.py"


rule make_windows:
    input:
        windows_inputs,
    output:
        directory("results/windows/{windows}"),
    params:
        job_config=windows_job_config,
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
        task_inputs,
    output:
        directory("results/tasks/{task}"),
    params:
        job_config=task_job_config,
    log:
        "logs/prepare_task/{task}.log",
    threads: 1
    conda:
        SOFTWARE_ENV
    script:
        "../workflow_scripts/prepare_task.py"
