"""minialbert.report on synthetic metrics.json files: lr selection on dev, statistics, averages."""

import json
import math
import statistics

import pandas as pd
import pytest

from minialbert.report import aggregate, load_run, summarise, runs_frame
from minialbert.utils import ConfigError


def write_run(root, model, task, mode, lr, seed, dev, test=None, metric="accuracy", **extra):
    d = root / "finetune" / model / task / mode / f"lr{lr:g}_seed{seed}"
    d.mkdir(parents=True)
    metrics = {
        "model": model, "model_dir": f"/some/dir/{model}", "task": task, "task_type": "single", "mode": mode, "lr": lr, "seed": seed,
        "epochs": 3, "batch_size": 16, "main_metric": metric, "main_value": dev,
        "dev": {metric: dev, "f1": dev / 2}, "test": None if test is None else {metric: test},
        "trainable_params": 1000 if mode == "full" else 100, "total_params": 5000, "unique_params": 4000,
        "train_seconds": 1.0, "eval_seconds": 0.5, "train_examples_per_second": 10.0,
        "eval_examples_per_second": 20.0, "config_hash": "abc",
        "config": {"model": f"/some/dir/{model}", "model_name": model, "task": task, "mode": mode, "lr": lr, "seed": seed},
        "workflow": {"model_identity": f"id-{model}", "task_identity": f"t-{task}"},
        **extra,
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d / "metrics.json"


@pytest.fixture
def results(tmp_path):
    files = []
    # model a, task t1, full mode: lr 1e-3 has the best dev MEAN (0.8, 0.6 -> 0.7) although
    # lr 1e-4 has the best single run (0.75, 0.55 -> 0.65)
    for seed, (v1, v2) in enumerate([(0.75, 0.8), (0.55, 0.6)]):
        files.append(write_run(tmp_path, "a", "t1", "full", 1e-4, seed, v1, test=v1 - 0.1))
        files.append(write_run(tmp_path, "a", "t1", "full", 1e-3, seed, v2, test=v2 - 0.2))
    for seed, v in enumerate([0.9, 0.7]):
        files.append(write_run(tmp_path, "a", "t2", "full", 1e-3, seed, v))
        files.append(write_run(tmp_path, "b", "t1", "full", 1e-3, seed, v - 0.3))
        files.append(write_run(tmp_path, "b", "t2", "full", 1e-3, seed, v - 0.3))
        files.append(write_run(tmp_path, "a", "t1", "adapter", 1e-3, seed, v - 0.1))
        files.append(write_run(tmp_path, "a", "t2", "adapter", 1e-3, seed, v - 0.1))
    eff = tmp_path / "efficiency"
    eff.mkdir()
    for model, unique in (("a", 4000), ("b", 2000)):
        (eff / f"{model}.json").write_text(json.dumps({
            "model": model, "total_params": 5000, "unique_params": unique, "batch_size": 8, "max_length": 128,
            "threads": 1, "latency_ms": 5.0, "latency_ms_min": 4.0, "throughput_examples_per_second": 1600.0}))
    return tmp_path, files, sorted(eff.glob("*.json"))


MODELS = {"a": {"kind": "teacher", "label": "Model A"}, "b": {"kind": "student", "label": "Model B"}}
TASKS = {"t1": {"group": "glue", "report_split": "dev"}, "t2": {"group": "glue", "report_split": "dev"}}


def test_load_run_flattens_metrics_and_uses_the_config_name(results):
    _, files, _ = results
    row = load_run(files[0])
    assert row["model"] == "a" and row["model_dir"] == "/some/dir/a"  # the config's name, and its dir
    assert row["dev_accuracy"] == 0.75 and row["dev_f1"] == 0.375
    assert row["test_accuracy"] == pytest.approx(0.65) and row["test_main_value"] == pytest.approx(0.65)
    assert row["model_identity"] == "id-a" and row["config_hash"] == "abc"
    assert json.loads(row["run_config"]) == {"model": "/some/dir/a", "model_name": "a", "task": "t1",
                                             "mode": "full", "lr": 1e-4, "seed": 0}


def test_load_run_reads_legacy_metrics_that_name_the_model_by_its_dir(tmp_path):
    path = write_run(tmp_path, "a", "t1", "full", 1e-3, 0, 0.8)
    data = json.loads(path.read_text())
    del data["model_dir"]
    data["model"] = "/some/dir/a"
    data["workflow"]["job_config"] = {"model": "a", "task": "t1", "lr": 1e-3, "seed": 0}
    path.write_text(json.dumps(data))
    row = load_run(path)
    assert row["model"] == "a" and row["model_dir"] == "/some/dir/a"
    assert json.loads(row["run_config"])["seed"] == 0


def test_legacy_efficiency_json_seq_len_is_read_as_max_length(results):
    from minialbert.report import efficiency_frame

    _, _, eff = results
    data = json.loads(eff[0].read_text())
    data["seq_len"] = data.pop("max_length")
    eff[0].write_text(json.dumps(data))
    df = efficiency_frame(eff)
    assert list(df["max_length"]) == [128, 128] and "seq_len" not in df.columns


def test_mnli_style_nested_dev_sets_are_flattened(tmp_path):
    path = write_run(tmp_path, "a", "mnli", "full", 1e-3, 0, 0.8)
    data = json.loads(path.read_text())
    data["dev"] = {"dev_matched": {"accuracy": 0.8}, "dev_mismatched": {"accuracy": 0.7}}
    data["test"] = {"test_matched": {"accuracy": 0.6}}
    path.write_text(json.dumps(data))
    row = load_run(path)
    assert row["dev_dev_matched_accuracy"] == 0.8 and row["dev_dev_mismatched_accuracy"] == 0.7
    assert row["test_main_value"] == 0.6


def test_summary_selects_lr_by_dev_mean_and_reports_std(results):
    _, files, _ = results
    summary = summarise(runs_frame(files, MODELS, TASKS))
    row = summary[(summary.model == "a") & (summary.task == "t1") & (summary["mode"] == "full")].iloc[0]
    assert row["lr"] == pytest.approx(1e-3)
    assert row["n_runs"] == 2
    assert row["dev_mean"] == pytest.approx(0.7)
    assert row["dev_std"] == pytest.approx(statistics.stdev([0.8, 0.6]))
    assert row["test_mean"] == pytest.approx(0.5)  # test of the chosen lr, not the best test
    assert json.loads(row["dev_mean_by_lr"]) == pytest.approx({"0.0001": 0.65, "0.001": 0.7})


def test_single_run_has_no_std(tmp_path):
    files = [write_run(tmp_path, "a", "t1", "full", 1e-3, 0, 0.5)]
    row = summarise(runs_frame(files)).iloc[0]
    assert row["n_runs"] == 1 and math.isnan(row["dev_std"])


def test_report_split_test_fills_the_table_from_test(results):
    _, files, _ = results
    tasks = {"t1": {"group": "ner", "report_split": "test"}, "t2": {"group": "glue", "report_split": "dev"}}
    summary = summarise(runs_frame(files, MODELS, tasks))
    row = summary[(summary.model == "a") & (summary.task == "t1") & (summary["mode"] == "full")].iloc[0]
    assert row["lr"] == pytest.approx(1e-3)  # still chosen on dev
    assert row["score"] == pytest.approx(0.5)


def test_aggregate_writes_tables_with_averages_and_params(results):
    root, files, eff = results
    paths = aggregate(files, eff, root / "summary", MODELS, TASKS)
    for name in ("runs", "summary", "table", "efficiency", "plot"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0
    runs = pd.read_csv(paths["runs"])
    assert len(runs) == len(files)
    assert {"model", "task", "mode", "lr", "seed", "main_metric", "main_value", "config_hash",
            "model_identity", "model_dir", "run_config"} <= set(runs.columns)
    assert "params" not in runs.columns
    table = pd.read_csv(paths["table"])
    assert list(table["model"]) == ["a", "a", "b"]  # teacher rows first, config order
    a_full = table[(table.model == "a") & (table["mode"] == "full")].iloc[0]
    assert a_full["t1"] == pytest.approx(70.0) and a_full["t2"] == pytest.approx(80.0)
    assert a_full["avg_glue"] == pytest.approx(75.0) and a_full["average"] == pytest.approx(75.0)
    assert a_full["unique_params"] == 4000 and a_full["trainable_params"] == 1000
    a_adapter = table[(table.model == "a") & (table["mode"] == "adapter")].iloc[0]
    assert a_adapter["trainable_params"] == 100
    b = table[table.model == "b"].iloc[0]
    assert b["unique_params"] == 2000 and b["average"] == pytest.approx(50.0)
    eff_df = pd.read_csv(paths["efficiency"])
    assert set(eff_df["model"]) == {"a", "b"} and "latency_ms" in eff_df.columns


def test_missing_task_gives_no_average(tmp_path):
    files = [write_run(tmp_path, "a", "t1", "full", 1e-3, 0, 0.5), write_run(tmp_path, "a", "t2", "full", 1e-3, 0, 0.7),
             write_run(tmp_path, "b", "t1", "full", 1e-3, 0, 0.5)]
    paths = aggregate(files, [], tmp_path / "summary")
    table = pd.read_csv(paths["table"])
    assert table.set_index("model").loc["a", "average"] == pytest.approx(60.0)
    assert math.isnan(table.set_index("model").loc["b", "average"])


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no fine-tuning runs"):
        aggregate([], [], tmp_path / "summary")


def test_incomplete_metrics_file_is_named(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"model": "a"}))
    with pytest.raises(ConfigError, match="metrics.json has no 'task'"):
        load_run(path)


def test_cli_aggregate_reads_a_results_dir(results):
    from minialbert.cli import main

    root, files, _ = results
    assert main(["aggregate", "--results", str(root)]) == 0
    table = pd.read_csv(root / "summary" / "table.csv")
    assert set(table["model"]) == {"a", "b"}


def test_efficiency_measures_a_tiny_model(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from minialbert.cli import main

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "efficiency" / "tiny.json"
    assert main(["efficiency", "--model", str(tmp_path / "tiny"), "--output", str(out), "--batch-size", "2",
                 "--max-length", "128", "--repeats", "2", "--warmup-repeats", "1"]) == 0
    data = json.loads(out.read_text())
    assert data["model"] == "tiny" and data["max_length"] == 64  # capped at the model's positions
    assert data["unique_params"] > 0 and data["total_params"] >= data["unique_params"]
    assert data["latency_ms"] > 0 and data["throughput_examples_per_second"] > 0


def test_efficiency_refuses_the_old_seq_len_flag(tmp_path, capsys):
    from minialbert.cli import main

    assert main(["efficiency", "--model", str(tmp_path), "--output", str(tmp_path / "e.json"), "--seq-len", "1"]) == 2
    assert "seq_len: this key was renamed: use max_length" in capsys.readouterr().err
    assert not (tmp_path / "e.json").exists()
