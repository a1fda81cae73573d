"""Corpus ingestion: every source format, the hub path through a local stand-in, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minialbert.data.corpora import ingest_corpus, load_corpus, read_source_spec
from minialbert.utils import ConfigError

REPO = Path(__file__).resolve().parent.parent


def texts(ds) -> list[str]:
    return list(ds["text"])


def test_text_one_document_per_line(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("first document\n\nsecond document\n   \nthird\n")
    ds = ingest_corpus({"type": "files", "paths": [str(src)], "text_layout": "line"}, tmp_path / "out")
    assert ds.column_names == ["text"]
    assert texts(ds) == ["first document", "second document", "third"]  # blank lines dropped


def test_text_blank_line_separated_documents(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("doc one line one\ndoc one line two\n\n\ndoc two\n\ndoc three\nmore\n")
    ds = ingest_corpus({"type": "files", "paths": str(src), "format": "text", "text_layout": "blank_line"},
                       tmp_path / "out")
    assert texts(ds) == ["doc one line one\ndoc one line two", "doc two", "doc three\nmore"]


def test_jsonl_csv_parquet_and_glob(tmp_path):
    import pandas as pd

    (tmp_path / "a.jsonl").write_text(json.dumps({"body": "json one", "id": 1}) + "\n\n"
                                      + json.dumps({"body": "json two"}) + "\n")
    pd.DataFrame({"body": ["csv one, with a comma", "csv two"], "x": [1, 2]}).to_csv(tmp_path / "b.csv", index=False)
    pd.DataFrame({"body": ["parquet one", None, "parquet two"]}).to_parquet(tmp_path / "c.parquet")
    spec = {"type": "files", "paths": [str(tmp_path / "*.jsonl"), str(tmp_path / "b.csv"), str(tmp_path / "c.*")],
            "text_column": "body"}
    ds = ingest_corpus(spec, tmp_path / "out")
    assert texts(ds) == ["json one", "json two", "csv one, with a comma", "csv two", "parquet one", "parquet two"]
    assert texts(load_corpus(tmp_path / "out")) == texts(ds)


def test_spec_file_yaml_and_json_and_max_documents(tmp_path):
    src = tmp_path / "docs.txt"
    src.write_text("a\nb\nc\n")
    (tmp_path / "spec.yaml").write_text(f"type: files\npaths: {src}\ntext_layout: line\nmax_documents: 2\n")
    assert texts(ingest_corpus(tmp_path / "spec.yaml", tmp_path / "out1")) == ["a", "b"]
    (tmp_path / "spec.json").write_text(json.dumps({"type": "files", "paths": [str(src)], "text_layout": "line"}))
    assert texts(ingest_corpus(tmp_path / "spec.json", tmp_path / "out2")) == ["a", "b", "c"]


def test_hub_source_through_a_local_dataset_dir(tmp_path):
    # `datasets.load_dataset` reads a local dir of data files the same way it reads a hub
    # repo, so this runs the real hub code path offline.
    hub = tmp_path / "fake_wiki"
    hub.mkdir()
    rows = [{"title": "A", "article": "alpha text"}, {"title": "B", "article": "beta text"}]
    (hub / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {"type": "hub", "name": str(hub), "split": "train", "text_column": "article"}
    assert texts(ingest_corpus(spec, tmp_path / "out")) == ["alpha text", "beta text"]
    with pytest.raises(ConfigError, match="no text column 'text'.*article"):
        ingest_corpus({"type": "hub", "name": str(hub)}, tmp_path / "out2")


def test_demo_source(tmp_path):
    spec = {"type": "demo", "seed": 3, "sizes": {"num_drugs": 20, "num_diseases": 10, "num_people": 10,
                                                 "num_cities": 10, "documents_per_entity": 1}}
    ds = ingest_corpus(spec, tmp_path / "out")
    assert len(ds) == 50 and all(t.strip() for t in ds["text"])


@pytest.mark.parametrize("spec, message", [
    ({"type": "files", "paths": ["MISSING.txt"], "text_layout": "line"}, "MISSING.txt: corpus file not found"),
    ({"type": "files", "paths": ["nothing-here-*.txt"], "text_layout": "line"}, "glob 'nothing-here-\\*.txt' matches no file"),
    ({"type": "files", "paths": ["{tmp}/docs.txt"]}, "docs.txt: plain-text corpus file, but field `text_layout`"),
    ({"type": "files", "paths": ["{tmp}/docs.txt"], "text_layout": "lines"}, "field `text_layout` must be one of"),
    ({"type": "files", "paths": ["{tmp}/docs.jsonl"], "text_column": "body"}, "docs.jsonl: line 2: expected a JSON object with the text column 'body'"),
    ({"type": "files", "paths": ["{tmp}/docs.csv"], "text_column": "body"}, "docs.csv: CSV header has no text column 'body'"),
    ({"type": "files", "paths": ["{tmp}/blank.txt"], "text_layout": "line"}, "the corpus is empty"),
    ({"type": "files", "paths": ["{tmp}/docs.xml"]}, "docs.xml: cannot tell the format"),
    ({"type": "wiki"}, "field `type` must be one of hub, files, demo"),
    ({"type": "hub", "name": "x", "colum": "t"}, "unknown field\\(s\\) colum"),
])
def test_errors_name_file_and_field(tmp_path, spec, message):
    (tmp_path / "docs.txt").write_text("a\n")
    (tmp_path / "blank.txt").write_text("\n  \n")
    (tmp_path / "docs.xml").write_text("<a/>")
    (tmp_path / "docs.jsonl").write_text('{"body": "ok"}\n{"text": "no body"}\n')
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    spec = json.loads(json.dumps(spec).replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError, match=message):
        ingest_corpus(spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_bad_spec_file_and_bad_corpus_dir(tmp_path):
    (tmp_path / "spec.yaml").write_text("- just a list\n")
    with pytest.raises(ConfigError, match="spec.yaml: expected a mapping"):
        read_source_spec(tmp_path / "spec.yaml")
    with pytest.raises(ConfigError, match="nope: corpus directory not found"):
        load_corpus(tmp_path / "nope")


def test_cli_ingest_corpus(tmp_path, capsys):
    from minialbert.cli import main

    src = tmp_path / "docs.txt"
    src.write_text("one\n\ntwo\n")
    assert main(["ingest-corpus", "--files", str(src), "--text-layout", "blank_line", "--output",
                 str(tmp_path / "out")]) == 0
    assert texts(load_corpus(tmp_path / "out")) == ["one", "two"]
    assert main(["ingest-corpus", "--files", str(src), "--output", str(tmp_path / "bad")]) == 2
    assert "text_layout" in capsys.readouterr().err


def test_the_paper_corpus_loads_from_a_parquet_dump_laid_out_like_the_hub(tmp_path):
    """configs/paper-general.yaml reads wikimedia/wikipedia (parquet, no loading script): a local
    copy of its layout (README configs + <config>/train-*.parquet) goes through the same code path
    (`datasets.load_dataset(name, config, split=...)`) as the hub repo."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from minialbert.workflow.plan import corpus_source

    paper = yaml.safe_load(open(REPO / "configs" / "paper-general.yaml"))["corpora"]["wikipedia"]
    hub = paper["hub"]
    assert (hub["name"], hub["config"]) == ("wikimedia/wikipedia", "20231101.en")
    dump = tmp_path / "wikimedia" / "wikipedia"
    (dump / hub["config"]).mkdir(parents=True)
    (dump / "README.md").write_text(
        "---\nconfigs:\n- config_name: 20231101.en\n  data_files:\n  - split: train\n"
        "    path: 20231101.en/train-*\n- config_name: 20231101.fr\n  data_files:\n  - split: train\n"
        "    path: 20231101.fr/train-*\n---\n")
    table = pa.table({"id": ["12", "25"], "url": ["u1", "u2"], "title": ["Anarchism", "Autism"],
                      "text": ["Anarchism is a political philosophy.", "Autism is a condition."]})
    pq.write_table(table, dump / hub["config"] / "train-00000-of-00001.parquet")
    entry = dict(paper, hub=dict(hub, name=str(dump)))
    ds = ingest_corpus(corpus_source({"corpus": entry}), tmp_path / "out")
    assert texts(ds) == ["Anarchism is a political philosophy.", "Autism is a condition."]


def test_no_config_names_a_script_based_hub_dataset():
    """Datasets with a loading script (wikipedia, bookcorpus, ...) no longer load (datasets >= 4)."""
    import yaml

    script_based = {"wikipedia", "bookcorpus", "glue", "ncbi_disease", "bc5cdr", "bc2gm_corpus", "jnlpba",
                    "linnaeus", "species_800"}
    for path in [*(REPO / "configs").glob("*.yaml"), REPO / "config.yaml"]:
        config = yaml.safe_load(open(path))
        names = [c["hub"]["name"] for c in config.get("corpora", {}).values() if c.get("source") == "hub"]
        names += [(t["spec"].get("hub") or {}).get("name") for t in config.get("tasks", {}).values()]
        assert not script_based & set(names), path
