"""Task sources in their real on-disk layouts, label handling, malformed input, prepared dirs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from minialbert import tasks
from minialbert.cli import main as cli_main
from minialbert.tasks import GLUE_TASKS, build_task, load_task, parse_task_spec, prepare_task
from minialbert.utils import ConfigError


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def tsv(*fields: str) -> str:
    return "\t".join(fields)


def glue_spec(task: str, path: Path) -> tasks.TaskSpec:
    return parse_task_spec({"name": task, "source": "glue_dir", "glue_task": task, "path": str(path)})


# ------------------------------------------------------------------- GLUE layouts (real headers)
def write_cola(root: Path) -> Path:
    d = root / "CoLA"
    write(d / "train.tsv", [tsv("gj04", "1", "", "Our friends won't buy this analysis."),
                            tsv("gj04", "0", "*", "They drank the pub."),
                            tsv("gj04", "1", "", "The sailors rode the breeze clear of the rocks.")])
    write(d / "dev.tsv", [tsv("gj04", "0", "*", "The more we study verbs, the crazier they get get."),
                          tsv("gj04", "1", "", "Day by day the facts are getting murkier.")])
    write(d / "test.tsv", [tsv("index", "sentence"), tsv("0", "Bill whistled past the house.")])
    return d


def write_sst2(root: Path) -> Path:
    d = root / "SST-2"
    write(d / "train.tsv", [tsv("sentence", "label"), tsv("hide new secretions ", "0"), tsv("a gorgeous film ", "1")])
    write(d / "dev.tsv", [tsv("sentence", "label"), tsv("it 's a charming journey . ", "1")])
    write(d / "test.tsv", [tsv("index", "sentence"), tsv("0", "uneasy mishmash of styles")])
    return d


def write_mrpc(root: Path) -> Path:
    d = root / "MRPC"
    header = tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    write(d / "train.tsv", [header,
                            tsv("1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " .',
                                "Referring to him as only \" the witness \" , Amrozi accused his brother ."),
                            tsv("0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought Dominick 's in 1995 .")])
    write(d / "dev.tsv", [header, tsv("1", "1355540", "1355592", "He said the foodservice pie .", "The foodservice pie , he said .")])
    write(d / "test.tsv", [tsv("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                           tsv("0", "1089874", "1089925", "PCCW 's chief .", "Chief of PCCW .")])
    return d


STSB_HEADER = tsv("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score")


def write_stsb(root: Path) -> Path:
    d = root / "STS-B"
    write(d / "train.tsv", [STSB_HEADER,
                            tsv("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                "A plane is taking off.", "An air plane is taking off.", "5.000"),
                            tsv("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none",
                                "A man is playing a large flute.", "A man is playing a flute.", "3.800")])
    write(d / "dev.tsv", [STSB_HEADER, tsv("0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                                           "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", "5.000")])
    write(d / "test.tsv", [tsv(*STSB_HEADER.split("\t")[:-1]),
                           tsv("0", "main-captions", "MSRvid", "2012test", "0024", "none", "none", "A girl sings.", "A girl is singing.")])
    return d


MNLI_TRAIN_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEADER = MNLI_TRAIN_HEADER[:-1] + ["label2", "label3", "label4", "label5", "gold_label"]


def mnli_row(i: int, s1: str, s2: str, labels: list[str]) -> str:
    return tsv(str(i), "31193", f"{i}n", "government", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2, *labels)


def write_mnli(root: Path) -> Path:
    d = root / "MNLI"
    write(d / "train.tsv", [tsv(*MNLI_TRAIN_HEADER),
                            mnli_row(0, "Conceptually cream skimming has two dimensions.", "Product and geography matter.", ["neutral", "neutral"]),
                            mnli_row(1, "you know during the season", "You lose the things.", ["entailment", "entailment"]),
                            mnli_row(2, "One of our number will carry out", "A member will carry out.", ["contradiction", "contradiction"])])
    five = lambda g: [g] * 5 + [g]  # noqa: E731
    write(d / "dev_matched.tsv", [tsv(*MNLI_DEV_HEADER), mnli_row(0, "The new rights are nice.", "Everyone likes them.", five("neutral"))])
    write(d / "dev_mismatched.tsv", [tsv(*MNLI_DEV_HEADER), mnli_row(0, "Your gift is appreciated.", "Hundreds of people.", five("entailment")),
                                     mnli_row(1, "yes now you know", "August is hot.", five("contradiction"))])
    write(d / "test_matched.tsv", [tsv(*MNLI_TRAIN_HEADER[:10]), tsv("0", "31", "31e", "gov", "a", "b", "c", "d", "Hi there.", "Hello.")])
    return d


def test_glue_table_covers_nine_tasks():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert GLUE_TASKS["stsb"].type == "regression" and GLUE_TASKS["stsb"].labels is None
    assert GLUE_TASKS["cola"].main_metric == "matthews_correlation"


def test_cola_headerless_layout(tmp_path):
    task = build_task(glue_spec("cola", write_cola(tmp_path)))
    assert task.labels == ["unacceptable", "acceptable"]
    assert task.splits["train"]["text"][1] == "They drank the pub."
    assert task.splits["train"]["label"] == [1, 0, 1]
    assert task.info["splits"] == {"train": "train", "dev": "dev", "test": "test"}
    assert "label" not in task.splits["test"].column_names  # unreleased test labels
    assert task.info["main_metric"] == "matthews_correlation" and task.info["metric_config"] == "cola"


def test_sst2_layout(tmp_path):
    task = build_task(glue_spec("sst2", write_sst2(tmp_path)))
    assert task.type == "single" and task.labels == ["negative", "positive"]
    assert task.splits["dev"]["label"] == [1]


def test_mrpc_layout_positive_class_is_one(tmp_path):
    task = build_task(glue_spec("mrpc", write_mrpc(tmp_path)))
    train = task.splits["train"]
    assert train["text"][0].startswith("Amrozi accused") and train["text_pair"][1] == "Yucaipa bought Dominick 's in 1995 ."
    assert task.labels == ["not_equivalent", "equivalent"] and train["label"] == [1, 0]
    assert task.info["main_metric"] == "f1"
    assert task.splits["test"]["text"] == ["PCCW 's chief ."]


def test_stsb_layout_is_regression(tmp_path):
    task = build_task(glue_spec("stsb", write_stsb(tmp_path)))
    assert task.type == "regression" and task.labels is None
    assert task.splits["train"]["label"] == pytest.approx([5.0, 3.8])
    assert task.splits["dev"]["text_pair"] == ["A man wearing a hard hat is dancing."]
    assert "label" not in task.splits["test"].column_names


def test_mnli_has_both_dev_sets(tmp_path):
    task = build_task(glue_spec("mnli", write_mnli(tmp_path)))
    assert task.info["splits"] == {"train": "train", "dev_matched": "dev", "dev_mismatched": "dev", "test_matched": "test"}
    assert task.labels == ["entailment", "neutral", "contradiction"]
    assert task.splits["dev_mismatched"]["label"] == [0, 2]
    assert task.splits["train"]["text"][0] == "Conceptually cream skimming has two dimensions."


@pytest.mark.parametrize("task, header, row, labels", [
    ("qqp", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
     ["0", "1", "2", "How do I learn?", "How can I learn?", "1"], ["not_duplicate", "duplicate"]),
    ("qnli", ["index", "question", "sentence", "label"],
     ["0", "When?", "In 1999 it happened.", "entailment"], ["entailment", "not_entailment"]),
    ("rte", ["index", "sentence1", "sentence2", "label"],
     ["0", "No weapons were found.", "Weapons were found.", "not_entailment"], ["entailment", "not_entailment"]),
    ("wnli", ["index", "sentence1", "sentence2", "label"],
     ["0", "I put the cake in the box.", "The box is small.", "1"], ["not_entailment", "entailment"]),
])
def test_other_glue_pair_layouts(tmp_path, task, header, row, labels):
    d = tmp_path / task
    other = row[:-1] + [{"1": "0", "0": "1"}.get(row[-1], labels[0] if row[-1] == labels[1] else labels[1])]
    write(d / "train.tsv", [tsv(*header), tsv(*row), tsv(*other)])
    write(d / "dev.tsv", [tsv(*header), tsv(*row)])
    write(d / "test.tsv", [tsv(*header[:-1]), tsv(*row[:-1])])
    built = build_task(glue_spec(task, d))
    first, second = GLUE_TASKS[task].dir_columns[:2]
    assert built.type == "pair" and built.labels == labels
    assert built.splits["dev"]["text"] == [row[header.index(first)]]
    assert built.splits["dev"]["text_pair"] == [row[header.index(second)]]
    assert "label" not in built.splits["test"].column_names


def test_glue_wrong_column_count_names_file_and_line(tmp_path):
    d = write_mrpc(tmp_path)
    with open(d / "dev.tsv", "a") as f:
        f.write("1\t11\t12\tonly one sentence\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv: line 3: expected 5 tab-separated columns, found 4"):
        build_task(glue_spec("mrpc", d))


def test_glue_skip_malformed_only_when_asked(tmp_path):
    d = write_sst2(tmp_path)
    with open(d / "train.tsv", "a") as f:
        f.write("broken line without a label\n")
    with pytest.raises(ConfigError, match=r"train\.tsv: line 4: expected 2 tab-separated columns, found 1"):
        build_task(glue_spec("sst2", d))
    spec = parse_task_spec({"name": "sst2", "source": "glue_dir", "glue_task": "sst2", "path": str(d), "skip_malformed": True})
    assert len(build_task(spec).splits["train"]) == 2


def test_glue_empty_file(tmp_path):
    d = write_sst2(tmp_path)
    (d / "dev.tsv").write_text("")
    with pytest.raises(ConfigError, match=r"dev\.tsv: empty file"):
        build_task(glue_spec("sst2", d))


def test_glue_dev_label_unseen_in_training(tmp_path):
    d = write_mnli(tmp_path)
    write(d / "train.tsv", [tsv(*MNLI_TRAIN_HEADER), mnli_row(0, "a", "b", ["neutral", "neutral"]),
                            mnli_row(1, "c", "d", ["entailment", "entailment"])])
    with pytest.raises(ConfigError, match=r"dev_mismatched\.tsv: label 'contradiction' never occurs in the training split"):
        build_task(glue_spec("mnli", d))


def test_glue_hub_with_stand_in(monkeypatch):
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["not_equivalent", "equivalent"]),
                                  "idx": datasets.Value("int32")})

    def fake_load_dataset(name, config):
        assert (name, config) == ("nyu-mll/glue", "mrpc")
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 1], "idx": [0, 1]}, features=features),
            "validation": datasets.Dataset.from_dict({"sentence1": ["e"], "sentence2": ["f"], "label": [1], "idx": [0]}, features=features),
            "test": datasets.Dataset.from_dict({"sentence1": ["g"], "sentence2": ["h"], "label": [-1], "idx": [0]}, features=features),
        })

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = build_task(parse_task_spec({"name": "mrpc", "source": "glue_hub", "glue_task": "mrpc"}))
    assert task.labels == ["not_equivalent", "equivalent"]
    assert task.splits["dev"]["label"] == [1] and task.splits["train"]["text_pair"] == ["c", "d"]
    assert "label" not in task.splits["test"].column_names


def test_glue_hub_regression_with_stand_in(monkeypatch):
    features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                  "label": datasets.Value("float32"), "idx": datasets.Value("int32")})
    rows = lambda labels: {"sentence1": ["a"] * len(labels), "sentence2": ["b"] * len(labels), "label": labels,  # noqa: E731
                           "idx": list(range(len(labels)))}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(rows([5.0, 3.8, 0.25]), features=features),
        "validation": datasets.Dataset.from_dict(rows([1.5]), features=features),
        "test": datasets.Dataset.from_dict(rows([-1.0]), features=features)}))
    task = build_task(parse_task_spec({"name": "stsb", "source": "glue_hub", "glue_task": "stsb"}))
    assert task.type == "regression" and task.labels is None and task.info["metric_config"] == "stsb"
    assert task.splits["train"]["label"] == pytest.approx([5.0, 3.8, 0.25]) and task.splits["dev"]["label"] == [1.5]
    assert task.splits["train"].features["label"] == datasets.Value("float32")
    assert "label" not in task.splits["test"].column_names


# ------------------------------------------------------------------- BioBERT NER layout
NER_TRAIN = ["Famotidine\tB-Chemical", "-\tO", "associated\tO", "delirium\tO", ".\tO", "",
             "Naloxone\tB-Chemical", "reverses\tO", "clonidine\tB-Chemical", "hydro\tB-Chemical", "chloride\tI-Chemical", ""]
NER_DEV = ["Lidocaine\tB-Chemical", "-\tO", "induced\tO", "", "", "arrest\tO"]


def write_bio_ner(root: Path, train_dev: bool = False) -> Path:
    d = root / "BC5CDR-chem"
    write(d / ("train_dev.tsv" if train_dev else "train.tsv"), NER_TRAIN + ([] if not train_dev else NER_DEV))
    write(d / "devel.tsv", NER_DEV)
    write(d / "test.tsv", ["Aspirin\tB-Chemical", "helps\tO"])
    return d


def ner_spec(path: Path, **extra) -> tasks.TaskSpec:
    return parse_task_spec({"name": "bc5cdr-chem", "source": "bio_ner_dir", "path": str(path), **extra})


def test_bio_ner_layout(tmp_path):
    task = build_task(ner_spec(write_bio_ner(tmp_path)))
    assert task.type == "token" and task.labels == ["O", "B-Chemical", "I-Chemical"]
    train = task.splits["train"]
    assert len(train) == 2 and train["tokens"][1] == ["Naloxone", "reverses", "clonidine", "hydro", "chloride"]
    assert train["tags"][1] == [1, 0, 1, 1, 2]
    assert task.splits["dev"]["tokens"] == [["Lidocaine", "-", "induced"], ["arrest"]]  # several blank lines = one break
    assert task.info["metric"] == "seqeval" and task.info["main_metric"] == "f1"


def test_bio_ner_train_dev_convention(tmp_path):
    d = write_bio_ner(tmp_path, train_dev=True)  # only train_dev.tsv: used for training
    task = build_task(ner_spec(d))
    assert len(task.splits["train"]) == 4 and task.info["origins"]["train"].endswith("train_dev.tsv")
    write(d / "train.tsv", NER_TRAIN)
    assert len(build_task(ner_spec(d)).splits["train"]) == 2
    assert len(build_task(ner_spec(d, train_dev=True)).splits["train"]) == 4


@pytest.mark.parametrize("bad_line, message", [
    ("\tB-Chemical", r"line 3: tag 'B-Chemical' without a token"),
    ("Aspirin\tB-Chemical\textra", r"line 3: expected 'token<TAB>tag' \(2 columns\), found 3"),
    ("Aspirin", r"line 3: expected 'token<TAB>tag' \(2 columns\), found 1"),
])
def test_bio_ner_malformed_lines(tmp_path, bad_line, message):
    d = write_bio_ner(tmp_path)
    write(d / "test.tsv", ["Aspirin\tB-Chemical", "", bad_line])
    with pytest.raises(ConfigError, match=r"test\.tsv: " + message):
        build_task(ner_spec(d))


def test_bio_ner_unseen_tag_and_empty_file(tmp_path):
    d = write_bio_ner(tmp_path)
    write(d / "test.tsv", ["Aspirin\tB-Disease"])
    with pytest.raises(ConfigError, match=r"test\.tsv: label 'B-Disease' never occurs in the training split"):
        build_task(ner_spec(d))
    (d / "test.tsv").write_text("\n\n")
    with pytest.raises(ConfigError, match=r"test\.tsv: empty file"):
        build_task(ner_spec(d))


def test_hub_ner_with_stand_in(monkeypatch):
    tags = datasets.Sequence(datasets.ClassLabel(names=["O", "B-Disease", "I-Disease"]))
    features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")), "ner_tags": tags})
    train = {"id": ["0", "1"], "tokens": [["Tay", "-", "Sachs"], ["no", "disease"]], "ner_tags": [[1, 2, 2], [0, 0]]}
    dev = {"id": ["0"], "tokens": [["cancer"]], "ner_tags": [[1]]}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(train, features=features),
        "validation": datasets.Dataset.from_dict(dev, features=features)}))
    task = build_task(parse_task_spec({"name": "ncbi", "source": "hub_ner", "hub": {"name": "ncbi/ncbi_disease"}}))
    assert task.labels == ["O", "B-Disease", "I-Disease"] and task.splits["dev"]["tags"] == [[1]]


# ------------------------------------------------------------------- custom files
def test_custom_csv_and_jsonl(tmp_path):
    write(tmp_path / "train.csv", ["id,review,stars", '1,"good, really",pos', "2,bad,neg"])
    write(tmp_path / "dev.jsonl", [json.dumps({"review": "fine", "stars": "pos"})])
    spec = parse_task_spec({"name": "reviews", "source": "files", "type": "single", "text_columns": ["review"],
                            "label_column": "stars", "files": {"train": "train.csv", "dev": "dev.jsonl"}},
                           base_dir=tmp_path)
    task = build_task(spec)
    assert task.labels == ["neg", "pos"] and task.splits["train"]["text"] == ["good, really", "bad"]
    assert task.info["metric_config"] == "classification" and task.info["main_metric"] == "accuracy"


def test_custom_jsonl_token_task(tmp_path):
    write(tmp_path / "train.jsonl", [json.dumps({"words": ["Tay", "-", "Sachs"], "ner": ["B-D", "I-D", "I-D"]})])
    write(tmp_path / "dev.jsonl", [json.dumps({"words": ["x", ""], "ner": ["O", "O"]})])
    spec = {"name": "t", "source": "files", "type": "token", "text_columns": ["words"], "label_column": "ner",
            "files": {"train": "train.jsonl", "dev": "train.jsonl"}}
    task = build_task(parse_task_spec(spec, base_dir=tmp_path))
    assert task.labels == ["B-D", "I-D"] and task.splits["train"]["tags"] == [[0, 1, 1]]
    spec["files"]["dev"] = "dev.jsonl"
    with pytest.raises(ConfigError, match=r"dev\.jsonl: line 1: a tag without a token"):
        build_task(parse_task_spec(spec, base_dir=tmp_path))


def test_custom_files_errors(tmp_path):
    write(tmp_path / "train.csv", ["a,b,y", "x,y,1", "x,2"])
    spec = {"name": "t", "source": "files", "type": "pair", "text_columns": ["a", "b"], "label_column": "y",
            "files": {"train": "train.csv", "dev": "train.csv"}}
    with pytest.raises(ConfigError, match=r"train\.csv: line 3: expected 3 columns, found 2"):
        build_task(parse_task_spec(spec, base_dir=tmp_path))
    write(tmp_path / "dev.jsonl", ['{"a": "x", "b": "y", "y": 1}', "{not json"])
    spec["files"] = {"train": "dev.jsonl", "dev": "dev.jsonl"}
    with pytest.raises(ConfigError, match=r"dev\.jsonl: line 2: not valid JSON"):
        build_task(parse_task_spec(spec, base_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"field 'text_columns' must list 2"):
        parse_task_spec({**spec, "text_columns": ["a"]})


def test_spec_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"field 'glue_task' is 'foo'"):
        parse_task_spec({"name": "x", "source": "glue_dir", "glue_task": "foo", "path": "."})
    with pytest.raises(ConfigError, match=r"field 'source' is 'ftp'"):
        parse_task_spec({"name": "x", "source": "ftp"})
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        parse_task_spec({"name": "x", "source": "files", "colour": 1})


# ------------------------------------------------------------------- prepared dirs and CLI
def test_prepare_task_cli_writes_prepared_dir(tmp_path, capsys):
    write_stsb(tmp_path)
    (tmp_path / "stsb.yaml").write_text("name: stsb\nsource: glue_dir\nglue_task: stsb\npath: STS-B\n")
    out = tmp_path / "prepared" / "stsb"
    assert cli_main(["prepare-task", "--spec", str(tmp_path / "stsb.yaml"), "--output", str(out)]) == 0
    info = json.loads((out / "task.json").read_text())
    assert {k: info[k] for k in ("name", "type", "source", "main_metric", "metric", "labels")} == {
        "name": "stsb", "type": "regression", "source": "glue_dir", "main_metric": "pearson", "metric": "glue", "labels": None}
    task = load_task(out)
    assert task.splits["train"]["text"][0] == "A plane is taking off."
    assert sorted(p.name for p in out.iterdir()) == ["dev", "task.json", "test", "train"]


def test_prepare_task_cli_error_exit_code(tmp_path, capsys):
    d = write_bio_ner(tmp_path)
    write(d / "devel.tsv", ["Aspirin\tB-Gene"])
    spec = tmp_path / "ner.json"
    spec.write_text(json.dumps({"name": "ner", "source": "bio_ner_dir", "path": "BC5CDR-chem"}))
    assert cli_main(["prepare-task", "--spec", str(spec), "--output", str(tmp_path / "out")]) == 2
    assert "devel.tsv: label 'B-Gene' never occurs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_load_task_accepts_spec_file(tmp_path):
    write_cola(tmp_path)
    (tmp_path / "cola.yaml").write_text("name: cola\nsource: glue_dir\nglue_task: CoLA\npath: CoLA\n")
    assert load_task(tmp_path / "cola.yaml").labels == ["unacceptable", "acceptable"]
    prepare_task(tmp_path / "cola.yaml", tmp_path / "p")
    assert load_task(tmp_path / "p").splits["train"]["label"] == [1, 0, 1]


def test_prepare_task_help_lists_every_spec_field(capsys):
    """`minialbert prepare-task --help` lists the spec fields from their one declaration (TaskSpec)."""
    import dataclasses

    from minialbert.cli import main
    from minialbert.tasks import TaskSpec

    with pytest.raises(SystemExit):
        main(["prepare-task", "--help"])
    out = capsys.readouterr().out
    documented = [f.name for f in dataclasses.fields(TaskSpec) if f.metadata.get("doc")]
    assert set(documented) == {"name", "source", "type", "glue_task", "path", "hub", "files", "text_columns",
                               "label_column", "tokens_column", "tags_column", "train_dev", "skip_malformed",
                               "main_metric"}
    for name in documented:
        assert f"\n  {name}: " in out
    assert "  text_columns: null  # files: the text column(s)" in out
