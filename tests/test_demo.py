"""The demo world: determinism, real file layouts, and the unseen-entity property of the tasks."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest

from minialbert.demo import NER_LABELS, DemoSizes, build_world, make_demo
from minialbert.utils import ConfigError

SMALL = DemoSizes(num_drugs=40, num_diseases=12, num_people=20, num_cities=12, documents_per_entity=2,
                  train_examples=120, eval_examples=40)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "demo"
    make_demo(out, seed=5, sizes=SMALL)
    return out


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert all(len(r) == len(rows[0]) for r in rows), f"{path}: ragged rows"
    return rows[0], rows[1:]


def read_ner(path: Path) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if line:
            token, tag = line.split("\t")
            current.append((token, tag))
        elif current:
            sentences.append(current)
            current = []
    assert not current, f"{path}: last sentence not closed by a blank line"
    return sentences


def test_same_seed_byte_identical_other_seed_differs(demo_dir, tmp_path):
    make_demo(tmp_path / "again", seed=5, sizes=SMALL)
    assert digest(tmp_path / "again") == digest(demo_dir)
    make_demo(tmp_path / "other", seed=6, sizes=SMALL)
    assert digest(tmp_path / "other")["corpus/corpus.txt"] != digest(demo_dir)["corpus/corpus.txt"]


def test_demo_json_describes_the_files(demo_dir):
    info = json.loads((demo_dir / "demo.json").read_text())
    assert info["seed"] == 5 and info["corpus"]["format"] == "blank_line_documents"
    assert (demo_dir / info["corpus"]["path"]).is_file()
    assert [t["name"] for t in info["tasks"]] == ["SST-2", "MRPC", "STS-B", "NER"]
    assert {t["type"] for t in info["tasks"]} == {"single", "pair", "regression", "token"}
    for task in info["tasks"]:
        for split, filename in task["splits"].items():
            assert (demo_dir / task["path"] / filename).is_file(), (task["name"], split)


def test_corpus_documents_are_blank_line_separated(demo_dir):
    docs = (demo_dir / "corpus" / "corpus.txt").read_text().strip("\n").split("\n\n")
    n_entities = SMALL.num_drugs + SMALL.num_diseases + SMALL.num_people + SMALL.num_cities
    assert len(docs) == n_entities * SMALL.documents_per_entity
    assert all(d.strip() and "\t" not in d for d in docs)


def test_glue_layouts(demo_dir):
    tasks = demo_dir / "tasks"
    for split in ("train", "dev", "test"):
        header, rows = read_tsv(tasks / "SST-2" / f"{split}.tsv")
        assert header == ["sentence", "label"] and {r[1] for r in rows} <= {"0", "1"}
        header, rows = read_tsv(tasks / "MRPC" / f"{split}.tsv")
        assert header == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        assert {r[0] for r in rows} == {"0", "1"} and all(r[1].isdigit() and r[2].isdigit() for r in rows)
        header, rows = read_tsv(tasks / "STS-B" / f"{split}.tsv")
        assert header == ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                          "sentence2", "score"]
        assert all(0.0 <= float(r[9]) <= 5.0 for r in rows)
        assert len(rows) == (SMALL.train_examples if split == "train" else SMALL.eval_examples)


def test_biobert_ner_layout(demo_dir):
    for filename in ("train.tsv", "devel.tsv", "test.tsv"):
        sentences = read_ner(demo_dir / "tasks" / "NER" / filename)
        assert len(sentences) == (SMALL.train_examples if filename == "train.tsv" else SMALL.eval_examples)
        tags = [tag for s in sentences for _, tag in s]
        assert set(tags) <= set(NER_LABELS) and "B-DRUG" in tags
        for s in sentences:  # IOB: an I- tag continues an entity of the same type
            for (_, prev), (_, tag) in zip([("", "O")] + s, s):
                assert not tag.startswith("I-") or prev[2:] == tag[2:]


def test_eval_entities_never_in_train_but_in_corpus(demo_dir):
    world = build_world(5, SMALL)
    corpus_words = set((demo_dir / "corpus" / "corpus.txt").read_text().split())
    train_text = " ".join(
        (demo_dir / "tasks" / name / "train.tsv").read_text() for name in ("SST-2", "MRPC", "STS-B", "NER"))
    train_words = set(train_text.split())
    for split in ("dev", "test"):
        for members in world.splits[split].values():
            for entity in members:
                for word in entity.name.split():
                    assert word in corpus_words and word not in train_words, (split, entity.name)


def test_sizes_are_checked_and_cli_writes_the_demo(tmp_path):
    from minialbert.cli import main

    with pytest.raises(ConfigError, match="num_drugs must be an integer >= 20"):
        make_demo(tmp_path / "x", sizes=DemoSizes(num_drugs=3))
    assert main(["make-demo", "--output", str(tmp_path / "cli"), "--seed", "5", "--num-drugs", "40",
                 "--num-diseases", "12", "--num-people", "20", "--num-cities", "12", "--documents-per-entity", "2",
                 "--train-examples", "120", "--eval-examples", "40"]) == 0
    info = json.loads((tmp_path / "cli" / "demo.json").read_text())
    assert info["sizes"]["num_drugs"] == 40 and len(info["tasks"]) == 4
