"""Fine-tuning end to end on tiny random models (BERT and MiniALBERT): classification,
regression and NER, full and adapter tuning; NER chunking scores every word."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minialbert import finetune as ft
from minialbert import task_types
from minialbert.cli import main as cli_main
from minialbert.command_configs import FinetuneConfig
from minialbert.tasks import build_task, parse_task_spec
from minialbert.utils import ConfigError, config_hash

WORDS = ("the a film movie good bad great awful plot acting is was not very really fun dull "
         "aspirin naloxone delirium caused reverses clonidine patients with cancer disease "
         "man woman plays guitar flute sings dog runs park").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# sub-word pieces so that some words split into several tokens
PIECES = ["asp", "##irin", "nal", "##ox", "##one", "##s", "##ing", ".", ","]

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the test machine's cores are shared, and oversubscribed threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


EXPECTED_KEYS = {"model", "model_dir", "task", "task_type", "mode", "lr", "seed", "epochs", "batch_size", "dev", "test",
                 "main_metric", "main_value", "trainable_params", "total_params", "unique_params", "train_seconds",
                 "eval_seconds", "train_examples_per_second", "eval_examples_per_second", "config_hash", "config"}


def make_tokenizer():
    from transformers import BertTokenizerFast

    tokens = list(dict.fromkeys(SPECIAL + WORDS + PIECES))
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)}, do_lower_case=True)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForMaskedLM

    out = tmp_path_factory.mktemp("bert")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def minialbert_dir(tmp_path_factory) -> Path:
    from minialbert import MiniAlbertConfig, MiniAlbertForMaskedLM

    out = tmp_path_factory.mktemp("minialbert")
    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = MiniAlbertConfig(vocab_size=len(tokenizer), embedding_size=8, hidden_size=16, num_hidden_layers=3,
                              num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                              use_adapter=False, reduction_factor=4)
    MiniAlbertForMaskedLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory) -> dict[str, Path]:
    """Small GLUE-layout SST-2 and STS-B dirs and a BioBERT-layout NER dir, with spec files."""
    root = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    sst = root / "SST-2"
    sst.mkdir()
    for split, n in (("train", 24), ("dev", 10)):
        rows = ["sentence\tlabel"] + [f"{sentence(rng, rng.randint(3, 12))}\t{i % 2}" for i in range(n)]
        (sst / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    sts = root / "STS-B"
    sts.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split, n in (("train", 20), ("dev", 8)):
        rows = [header] + [f"{i}\tmain\tMSRvid\t2012\t{i:04d}\tnone\tnone\t{sentence(rng, 5)}\t{sentence(rng, 6)}\t"
                           f"{rng.uniform(0, 5):.3f}" for i in range(n)]
        (sts / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    ner = root / "NER"
    ner.mkdir()
    for split, n in (("train", 12), ("devel", 6), ("test", 6)):
        lines = []
        for _ in range(n):
            for _ in range(rng.randint(2, 9)):
                word = rng.choice(WORDS)
                tag = "B-Chemical" if word in ("aspirin", "naloxone", "clonidine") else "O"
                lines.append(f"{word}\t{tag}")
            lines.append("")
        (ner / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    specs = {
        "sst2": {"name": "sst2", "source": "glue_dir", "glue_task": "sst2", "path": str(sst)},
        "stsb": {"name": "stsb", "source": "glue_dir", "glue_task": "stsb", "path": str(sts)},
        "ner": {"name": "ner", "source": "bio_ner_dir", "path": str(ner)},
    }
    for name, spec in specs.items():
        (root / f"{name}.json").write_text(json.dumps(spec))
    return {name: root / f"{name}.json" for name in specs}


def run_cli(model: Path, task: Path, out: Path, mode: str = "full", *extra: str) -> dict:
    args = ["finetune", "--model", str(model), "--task", str(task), "--mode", mode, "--lr", "1e-3", "--seed", "3",
            "--output", str(out), "--epochs", "2", "--batch-size", "4", "--max-length", "32", "--warmup-ratio", "0.1", *extra]
    assert cli_main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("task, metric", [("sst2", "accuracy"), ("stsb", "pearson"), ("ner", "f1")])
@pytest.mark.parametrize("mode", ["full", "adapter"])
def test_finetune_bert_writes_complete_metrics(bert_dir, task_dirs, tmp_path, task, metric, mode):
    metrics = run_cli(bert_dir, task_dirs[task], tmp_path / "out", mode)
    assert EXPECTED_KEYS <= set(metrics)
    assert metrics["main_metric"] == metric and metrics["main_value"] == metrics["dev"][metric]
    assert metrics["mode"] == mode and metrics["task"] == task and metrics["seed"] == 3
    assert metrics["model"] == bert_dir.name and metrics["model_dir"] == str(bert_dir)  # the dir's basename
    assert metrics["config"]["warmup_ratio"] == 0.1 and "warmup" not in metrics["config"]
    assert 0 < metrics["trainable_params"] <= metrics["unique_params"] <= metrics["total_params"]
    if mode == "adapter":
        assert metrics["trainable_params"] < metrics["unique_params"] / 2
    if task == "ner":  # BioBERT test.tsv has labels; GLUE test sets do not
        assert set(metrics["test"]) == {"precision", "recall", "f1", "accuracy"}
    else:
        assert metrics["test"] is None
    assert not (tmp_path / "out" / "model").exists()  # weights only with --save-model


@pytest.mark.parametrize("task, mode", [("sst2", "full"), ("stsb", "adapter"), ("ner", "full"), ("ner", "adapter")])
def test_finetune_minialbert(minialbert_dir, task_dirs, tmp_path, task, mode):
    metrics = run_cli(minialbert_dir, task_dirs[task], tmp_path / "out", mode)
    assert EXPECTED_KEYS <= set(metrics)
    assert metrics["total_params"] > metrics["unique_params"]  # the shared layer runs 3 times
    if mode == "adapter":
        assert metrics["trainable_params"] < metrics["unique_params"] / 2


def test_finetune_is_deterministic_and_saves_model(bert_dir, task_dirs, tmp_path):
    a = run_cli(bert_dir, task_dirs["sst2"], tmp_path / "a", "full", "--save-model")
    b = run_cli(bert_dir, task_dirs["sst2"], tmp_path / "b", "full")
    assert a["dev"] == b["dev"] and a["final_train_loss"] == b["final_train_loss"]
    assert a["config_hash"] == b["config_hash"]
    from transformers import AutoModelForSequenceClassification

    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "a" / "model")
    assert saved.config.id2label == {0: "negative", 1: "positive"}


def test_long_sentence_is_split_and_every_word_scored(bert_dir, tmp_path):
    """A sentence far longer than --max-length is split into chunks; predictions come back for
    every word, in order, and the words with several sub-words are scored once."""
    d = tmp_path / "NER"
    d.mkdir()
    words = (["aspirining", "naloxones", "the", "dog"] * 15)[:57]  # the first two: 2 sub-words each
    tags = ["B-Chemical" if w.startswith(("asp", "nal")) else "O" for w in words]
    body = "\n".join(f"{w}\t{t}" for w, t in zip(words, tags)) + "\n"
    for name in ("train.tsv", "devel.tsv"):
        (d / name).write_text(body)
    task = build_task(parse_task_spec({"name": "ner", "source": "bio_ner_dir", "path": str(d)}))
    config = FinetuneConfig(model=str(bert_dir), task="ner", output=str(tmp_path / "out"), lr=1e-3, max_length=16,
                            eval_batch_size=3)
    tokenizer = ft.load_tokenizer(config)
    features = task_types.encode_words(task, "devel" if "devel" in task.splits else "dev", tokenizer, 16)
    assert sum(len(f["input_ids"]) - 2 for f in features) > len(words)  # sub-words were split
    assert len(features) > 5 and all(len(f["input_ids"]) <= 16 for f in features)
    covered = [f["word_start"] + i for f in features for i in range(len(f["word_positions"]))]
    assert covered == list(range(len(words)))  # every word in exactly one chunk, in order
    scored = sum(sum(label != task_types.IGNORE_INDEX for label in f["labels"]) for f in features)
    assert scored == len(words)  # one label per word (its first sub-word), not per sub-word

    # An oracle model that returns the gold label at each labelled position: F1 must be 1.0
    class Oracle(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            logits = torch.zeros(*input_ids.shape, 3)
            for row, ids in enumerate(input_ids.tolist()):
                for pos, token in enumerate(ids):
                    logits[row, pos, 1 if tokenizer.convert_ids_to_tokens(token) in ("aspirin", "naloxone") else 0] = 1
            return type("Out", (), {"logits": logits})()

    from minialbert.precision import Precision

    run = ft.Run(config, task, tokenizer, Oracle(), torch.device("cpu"), {"dev": features},
                 task.task_type.collator(tokenizer), ("input_ids", "attention_mask"), Precision("cpu"))
    scores = ft.evaluate_split(run, "dev")
    assert scores["f1"] == 1.0 and scores["accuracy"] == 1.0


def test_chunk_words():
    assert task_types.chunk_words([1, 2, 3, 1], 3) == [(0, 2), (2, 3), (3, 4)]
    assert task_types.chunk_words([5, 1], 3) == [(0, 1), (1, 2)]  # an over-long word gets a chunk alone
    assert task_types.chunk_words([], 3) == []


def test_length_grouped_batches_cover_everything():
    lengths = [random.Random(i).randint(1, 100) for i in range(103)]
    batches = ft.length_grouped_batches(lengths, 8, random.Random(0), group_factor=4)
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert batches == ft.length_grouped_batches(lengths, 8, random.Random(0), group_factor=4)
    assert ft.warmup_steps(0.1, 95) == 10 and ft.warmup_steps(0.0, 95) == 0  # a ratio only (no steps)


def test_training_batches_are_shuffled_unless_grouped_by_length():
    """Length-grouped batches share whatever length predicts: in the demo's STS-B, a person's
    two-word name, so its label (dev Pearson 0.12 grouped, 0.62 shuffled, one full fine-tuning
    run each). Shuffled batches are the default; both cover every example once, per seed."""
    rng = random.Random(1)
    labels = [rng.choice((0.0, 2.5, 5.0)) for _ in range(400)]
    lengths = [20 + int(y) * 3 + rng.randint(0, 2) for y in labels]  # length predicts the label

    def label_spread(batches):  # the mean within-batch variance of the labels
        def var(xs):
            m = sum(xs) / len(xs)
            return sum((x - m) ** 2 for x in xs) / len(xs)
        return sum(var([labels[i] for i in b]) for b in batches) / len(batches)

    grouped = ft.length_grouped_batches(lengths, 8, random.Random(0))
    shuffled = ft.shuffled_batches(len(lengths), 8, random.Random(0))
    for batches in (grouped, shuffled):
        assert sorted(i for b in batches for i in b) == list(range(400))
    assert shuffled == ft.shuffled_batches(len(lengths), 8, random.Random(0))
    assert label_spread(grouped) < 0.2 * label_spread(shuffled)  # near-homogeneous batches
    assert label_spread(shuffled) > 0.7 * 4.17  # about the labels' variance

    config = FinetuneConfig(model="m", task="t", output="o", lr=1e-3)
    assert config.group_by_length is False
    assert config_hash(config.resolved()) != config_hash(dataclasses.replace(config, group_by_length=True).resolved())
    run = SimpleNamespace(features={"train": [{"input_ids": [0] * n} for n in lengths]},
                          config=SimpleNamespace(batch_size=8, epochs=1.5, group_by_length=False))
    epochs = list(ft.epoch_batches(run, random.Random(0)))
    assert epochs[0] == shuffled and len(epochs[1]) == 25  # half of the 50 batches
    run.config.group_by_length = True
    assert list(ft.epoch_batches(run, random.Random(0)))[0] == grouped


def test_sorted_eval_batches_respect_the_token_budget():
    lengths = [random.Random(i).randint(1, 60) for i in range(200)] + [400]
    batches = ft.sorted_batches(lengths, 64, max_tokens=300)
    assert sorted(i for b in batches for i in b) == list(range(201))
    assert batches[0] == [200]  # longer than the budget: alone, never dropped or truncated
    for batch in batches[1:]:
        assert len(batch) <= 64 and len(batch) * max(lengths[i] for i in batch) <= 300
        assert lengths[batch[0]] == max(lengths[i] for i in batch)  # longest first
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat, reverse=True)
    assert [len(b) for b in ft.sorted_batches(lengths, 64)] == [64, 64, 64, 9]  # no budget: by count


def test_eval_token_budget_is_a_run_setting_not_part_of_the_hash():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    required = {"model": "m", "task": "t", "output": "o", "lr": 1e-3}
    auto = FinetuneConfig.from_dict(required)
    assert ft.eval_token_budget(auto, cpu) == ft.CPU_EVAL_MAX_TOKENS and ft.eval_token_budget(auto, gpu) is None
    fixed = FinetuneConfig.from_dict({**required, "eval_max_tokens": 4096})
    assert ft.eval_token_budget(fixed, cpu) == 4096 == ft.eval_token_budget(fixed, gpu)
    assert fixed.resolved() == auto.resolved()  # changing it does not rerun finished runs
    for bad in (0, -5, "lots", "4096", True):
        with pytest.raises(ConfigError, match="eval_max_tokens"):
            FinetuneConfig.from_dict({**required, "eval_max_tokens": bad})


def test_old_warmup_key_and_flag_are_refused_naming_warmup_ratio(tmp_path, capsys):
    required = {"model": "m", "task": "t", "output": "o", "lr": 1e-3}
    for value in (0.1, 50):
        with pytest.raises(ConfigError, match=r"^warmup: this key was renamed: use warmup_ratio"):
            FinetuneConfig.from_dict({**required, "warmup": value})
    with pytest.raises(ConfigError, match=r"finetune\.warmup: .*warmup_ratio"):
        FinetuneConfig.from_dict({**required, "warmup": 0.1}, key="finetune")
    # steps are no longer accepted: the ratio must be a fraction < 1
    with pytest.raises(ConfigError, match=r"^warmup_ratio: expected a number < 1, got 50"):
        FinetuneConfig.from_dict({**required, "warmup_ratio": 50})
    assert FinetuneConfig.from_dict({**required, "warmup_ratio": 0.25}).warmup_ratio == 0.25
    # the old flag with a step count (its old meaning): exit 2 naming warmup_ratio
    args = ["finetune", "--model", "m", "--task", "t", "--output", str(tmp_path / "o"), "--lr", "1e-3"]
    capsys.readouterr()
    assert cli_main([*args, "--warmup", "50"]) == 2
    assert "warmup_ratio" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_finetune_config_types_and_name(tmp_path):
    required = {"model": "runs/students/tiny/", "task": "t", "output": "o", "lr": 1e-3}
    cfg = FinetuneConfig.from_dict(required)
    assert cfg.name == "tiny" and cfg.bf16 == "auto" and cfg.save_model is False
    assert FinetuneConfig.from_dict({**required, "model_name": "Tiny"}).name == "Tiny"
    assert FinetuneConfig.from_dict({**required, "bf16": False}).bf16 is False
    for key, bad in (("bf16", "false"), ("bf16", "yes"), ("lr", 0), ("save_model", "true")):
        with pytest.raises(ConfigError, match=f"^{key}: "):
            FinetuneConfig.from_dict({**required, key: bad})
    for missing in required:
        with pytest.raises(ConfigError, match=f"^{missing}: missing"):
            FinetuneConfig.from_dict({k: v for k, v in required.items() if k != missing})
    assert "output" not in cfg.resolved() and "eval_max_tokens" not in cfg.resolved()
    assert {"model", "task", "lr", "warmup_ratio", "bf16"} <= set(cfg.resolved())


def test_bad_arguments_are_config_errors(bert_dir, task_dirs, tmp_path, capsys):
    args = ["finetune", "--model", str(tmp_path / "nope"), "--task", str(task_dirs["sst2"]), "--lr", "1e-3",
            "--output", str(tmp_path / "o")]
    assert cli_main(args) == 2
    assert "--model" in capsys.readouterr().err


def test_finetune_mnli_scores_both_dev_sets(bert_dir, tmp_path):
    """MNLI in the GLUE layout: dev holds dev_matched and dev_mismatched; main value = matched."""
    rng = random.Random(1)
    d = tmp_path / "MNLI"
    d.mkdir()
    head = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    gold = ["entailment", "neutral", "contradiction"]
    for name, n in (("train.tsv", 12), ("dev_matched.tsv", 6), ("dev_mismatched.tsv", 5)):
        rows = ["\t".join(head + ["label1", "gold_label"])]
        rows += ["\t".join([str(i), "1", f"{i}e", "fiction", "(x)", "(y)", "(x)", "(y)", sentence(rng, 6),
                            sentence(rng, 4), gold[i % 3], gold[i % 3]]) for i in range(n)]
        (d / name).write_text("\n".join(rows) + "\n")
    spec = tmp_path / "mnli.yaml"
    spec.write_text(f"name: mnli\nsource: glue_dir\nglue_task: mnli\npath: {d}\n")
    metrics = run_cli(bert_dir, spec, tmp_path / "out", "full", "--epochs", "1")
    assert set(metrics["dev"]) == {"dev_matched", "dev_mismatched"}
    assert metrics["main_value"] == metrics["dev"]["dev_matched"]["accuracy"] and metrics["test"] is None


def test_finetune_custom_jsonl_prepared_dir(bert_dir, tmp_path):
    """A custom JSON-lines pair task, prepared first (prepare-task), then fine-tuned from the dir."""
    rng = random.Random(2)
    for split, n in (("train", 10), ("dev", 4)):
        rows = [json.dumps({"q": sentence(rng, 4), "a": sentence(rng, 5), "y": ["no", "yes", "maybe"][i % 3]})
                for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "qa.yaml").write_text("name: qa\nsource: files\ntype: pair\ntext_columns: [q, a]\nlabel_column: y\n"
                                      "files: {train: train.jsonl, dev: dev.jsonl}\n")
    assert cli_main(["prepare-task", "--spec", str(tmp_path / "qa.yaml"), "--output", str(tmp_path / "qa")]) == 0
    metrics = run_cli(bert_dir, tmp_path / "qa", tmp_path / "out", "adapter", "--epochs", "1", "--scheduler", "cosine",
                      "--model-name", "Tiny BERT", "--bf16", "false", "--no-save-model")
    assert set(metrics["dev"]) == {"accuracy", "f1_macro", "matthews_correlation"}
    assert metrics["config"]["scheduler"] == "cosine" and metrics["config"]["bf16"] is False
    assert metrics["model"] == "Tiny BERT" and metrics["model_dir"] == str(bert_dir)
    assert not (tmp_path / "out" / "model").exists()


def test_regression_targets_are_standardised_for_training():
    features = [{"labels": 0.0}, {"labels": 2.5}, {"labels": 5.0}, {"labels": 5.0}]
    mean, std = task_types.standardise_targets(features)
    assert mean == pytest.approx(3.125)
    assert std == pytest.approx(((3.125**2 + 0.625**2 + 2 * 1.875**2) / 4) ** 0.5)
    z = [f["labels"] for f in features]
    assert sum(z) == pytest.approx(0.0, abs=1e-12)
    assert sum(v * v for v in z) / len(z) == pytest.approx(1.0)
    assert task_types.standardise_targets([{"labels": 2.0}, {"labels": 2.0}]) == (2.0, 1.0)  # constant: std 1


def test_regression_predictions_are_mapped_back_to_the_task_scale(bert_dir, task_dirs, tmp_path, monkeypatch):
    """The real path (setup, predict, evaluate_split) on STS-B with the model's forward replaced
    by known outputs: predictions == output * std + mean of the training scores, exactly, in the
    split's order. Pearson is blind to the scale, so the scores alone would not notice."""
    config = FinetuneConfig(model=str(bert_dir), task=str(task_dirs["stsb"]), output=str(tmp_path / "out"), lr=1e-3,
                            max_length=32, eval_batch_size=3, device="cpu")
    from transformers.modeling_outputs import SequenceClassifierOutput

    run = ft.setup(config)
    scores = [float(s) for s in run.task.splits["train"]["label"]]
    mean, std = run.target_scale
    assert mean == pytest.approx(statistics.fmean(scores)) and std == pytest.approx(statistics.pstdev(scores))
    assert abs(mean) > 1 and abs(std - 1) > 0.2  # a wrong mapping cannot go unnoticed
    assert [f["labels"] for f in run.features["train"]] == pytest.approx([(s - mean) / std for s in scores])

    def output(ids: torch.Tensor) -> torch.Tensor:  # a known output per example: from its token ids
        return ids.sum(-1, keepdim=True).float() / 64 - 1  # [PAD] is id 0: padding changes nothing

    def forward(input_ids, **kwargs):
        return SequenceClassifierOutput(logits=output(input_ids))

    monkeypatch.setattr(run.model, "forward", forward)
    predictions = ft.predict(run, "dev")
    outputs = [output(torch.tensor([f["input_ids"]])) for f in run.features["dev"]]
    assert len(set(predictions)) == len(predictions) > 3  # distinct: the order is checked too
    assert predictions == [(o * std + mean).item() for o in outputs]
    assert predictions != pytest.approx([o.item() for o in outputs], abs=0.1)

    # An oracle that outputs the standardised gold scores: predictions are the gold scores
    gold = {tuple(f["input_ids"]): g for f, g in zip(run.features["dev"], run.task.splits["dev"]["label"])}

    def oracle(input_ids, attention_mask=None, **kwargs):
        rows = [tuple(i for i, m in zip(ids, mask) if m) for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]
        return SequenceClassifierOutput(logits=torch.tensor([[(gold[r] - mean) / std] for r in rows]))

    monkeypatch.setattr(run.model, "forward", oracle)
    assert ft.predict(run, "dev") == pytest.approx(list(run.task.splits["dev"]["label"]), abs=1e-5)
    assert ft.evaluate_split(run, "dev")["pearson"] == pytest.approx(1.0)


def test_finetuning_learns_a_separable_task(bert_dir, tmp_path):
    """A single-sentence task whose label is one word ("good" or "bad" among random filler
    words): the training loss falls far below chance and dev accuracy is well above chance.
    (An optimiser that never steps would pass the other fine-tuning tests.)"""
    rng = random.Random(0)
    filler = [w for w in WORDS if w not in ("good", "bad")]
    d = tmp_path / "SST-2"
    d.mkdir()
    for split, n in (("train", 64), ("dev", 40)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            words = [rng.choice(filler) for _ in range(rng.randint(3, 8))]
            words.insert(rng.randint(0, len(words)), ("bad", "good")[i % 2])
            rows.append(f"{' '.join(words)}\t{i % 2}")
        (d / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    spec = tmp_path / "sst2.json"
    spec.write_text(json.dumps({"name": "sst2", "source": "glue_dir", "glue_task": "sst2", "path": str(d)}))
    config = FinetuneConfig(model=str(bert_dir), task=str(spec), output=str(tmp_path / "out"), lr=1e-2, epochs=10,
                            batch_size=8, max_length=32, warmup_ratio=0.1, seed=0, device="cpu")
    run = ft.setup(config)

    def mean_train_loss() -> float:
        run.model.eval()
        features = run.features["train"]
        with torch.no_grad():
            return sum(float(run.model(**ft.collate(run, [i], features)).loss) for i in range(len(features))) / len(features)

    before = mean_train_loss()
    assert before == pytest.approx(math.log(2), abs=0.05)  # a fresh head: chance
    stats = ft.train(run)
    assert stats["steps"] == 80 and stats["final_loss"] < before / 2
    assert mean_train_loss() < before / 4
    dev, examples = ft.evaluate_role(run, "dev")
    assert examples == 40 and dev["accuracy"] >= 0.9
