"""Task types (minialbert/task_types.py): a type's name is compared only in its definition,
and a new type is one class: prepared from files and fine-tuned without touching tasks.py or
finetune.py."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest

from minialbert.cli import main as cli_main
from minialbert.task_types import TASK_TYPES, TaskType, task_type
from minialbert.tasks import load_task
from minialbert.utils import ConfigError
from test_finetune import bert_dir, one_thread, run_cli, sentence  # noqa: F401  (tiny BERT, one torch thread)

PACKAGE = Path(__file__).resolve().parents[1] / "minialbert"
DEFINITIONS = PACKAGE / "task_types.py"

# Places outside task_types.py allowed to compare a type name: (module, function, name) -> why.
ALLOWED = {
    # The demo generator writes its four tasks' files: "token" picks the BioBERT layout (and no
    # glue_task) for its NER task. That is where its data is written (a source), not how a
    # token task behaves; the demo is a data generator, not a consumer of task types.
    ("demo.py", "make_demo", "token"): "the demo NER task is written in the BioBERT layout",
}


def _literals(node: ast.AST) -> list[str]:
    """String constants of an operand: itself, or the elements of a literal tuple/list/set."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [item.value for item in items if isinstance(item, ast.Constant) and isinstance(item.value, str)]


def _is_hf_problem_type(node: ast.AST) -> bool:
    # transformers' `config.problem_type == "regression"` (modeling.py's loss switch) is HF's
    # convention for a sequence head's loss, not our task type; task_types.Regression sets it.
    return isinstance(node, ast.Attribute) and node.attr == "problem_type"


def type_name_uses(source: str, names: set[str]) -> list[tuple[int, str, str, str]]:
    """(line, enclosing function, name, how) of every type name compared (==, !=, in, not in,
    is, match case) or used as a dict key."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if not any(_is_hf_problem_type(o) for o in operands):
                found.extend((node.lineno, function, name, "comparison")
                             for o in operands for name in _literals(o) if name in names)
        elif isinstance(node, ast.Dict):
            found.extend((node.lineno, function, key.value, "dict key") for key in node.keys
                         if isinstance(key, ast.Constant) and key.value in names)
        elif isinstance(node, ast.MatchValue):
            found.extend((node.lineno, function, name, "match case") for name in _literals(node.value) if name in names)
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return found


NAMES = {"single", "pair", "regression", "token"}


def test_the_four_types_are_registered():
    assert set(TASK_TYPES) == NAMES and list(TASK_TYPES) == ["single", "pair", "regression", "token"]
    assert all(TASK_TYPES[name].name == name for name in TASK_TYPES)
    assert task_type("token") is TASK_TYPES["token"]
    with pytest.raises(ConfigError, match=r"unknown task type 'choice'; expected one of \['single', 'pair', "
                                          r"'regression', 'token'\]"):
        task_type("choice")


def test_scanner_finds_comparisons_and_dict_keys():
    """The checks the next test relies on: what today's (before the task types) code did."""
    code = '''
MAIN = {"single": "accuracy", "token": "f1"}
def f(spec, x, config):
    if spec.type == "token": pass
    if spec.type not in (None, "token"): pass
    if "regression" != x: pass
    want = {"pair": 2}[spec.type]
    if config.problem_type == "regression": pass
    match x:
        case "single": pass
    return "token" if x else "pair"   # a value, not a comparison
'''
    uses = type_name_uses(code, NAMES)
    assert [(line, how) for line, _, _, how in uses] == [
        (2, "dict key"), (2, "dict key"), (4, "comparison"), (5, "comparison"), (6, "comparison"), (7, "dict key"),
        (10, "match case")]


def test_type_names_are_compared_only_in_task_types():
    """Everything that depends on a task type is asked of its class (task_types.py): no other
    module compares a type name or keys a dict by one. The GLUE table's `type` values, the
    demo's task metadata and task.json's "type" are names used as values: allowed."""
    assert DEFINITIONS.is_file()
    found, used_allowances = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == DEFINITIONS:
            continue
        module = path.relative_to(PACKAGE).as_posix()
        for line, function, name, how in type_name_uses(path.read_text(encoding="utf-8"), NAMES):
            if (module, function, name) in ALLOWED:
                used_allowances.add((module, function, name))
            else:
                found.append(f"minialbert/{module}:{line} ({function}): {how} with task type name {name!r}")
    assert not found, "ask the task type (minialbert/task_types.py) instead:\n" + "\n".join(found)
    assert used_allowances == set(ALLOWED), f"stale ALLOWED entries: {set(ALLOWED) - used_allowances}"


# ------------------------------------------------------------------- a new type is one class
class MultipleChoice(TaskType):
    """A toy multiple-choice type: a context, a list of candidate answers, the index of the
    right one. Reads JSON lines, prepares `text` + `choices` + `label`, encodes each
    (context, choice) pair, and puts transformers' multiple-choice head on the encoder."""

    name = "choice"
    text_column_counts = (2,)  # the context and the choices
    auto_model = "AutoModelForMultipleChoice"
    problem_type = None

    def read_row(self, path, lineno, row, text_columns, label_column, has_labels):
        choices = row[text_columns[1]]
        if not isinstance(choices, list) or len(choices) < 2:
            raise ConfigError(f"{path}: line {lineno}: column {text_columns[1]!r} must list the choices")
        example = {"text": str(row[text_columns[0]]), "choices": [str(c) for c in choices]}
        if has_labels:
            example["label"] = str(row[label_column])
        return example

    def order_labels(self, labels):
        return sorted(labels, key=int)  # label i is choice i

    def arrow_columns(self, examples, has_labels, labels):
        import datasets

        features = {"text": datasets.Value("string"), "choices": datasets.Sequence(datasets.Value("string"))}
        columns = {"text": [e["text"] for e in examples], "choices": [e["choices"] for e in examples]}
        if has_labels:
            features["label"], columns["label"] = self.label_values(examples, labels)
        return features, columns

    def encode(self, task, split, tokenizer, max_length):
        dataset = task.splits[split]
        contexts, choices = list(dataset["text"]), list(dataset["choices"])
        encoded = tokenizer([c for c, cs in zip(contexts, choices) for _ in cs], [x for cs in choices for x in cs],
                            truncation=True, max_length=max_length)
        labels = list(dataset["label"]) if "label" in dataset.column_names else None
        features, start = [], 0
        for i, cs in enumerate(choices):
            feature = {key: values[start:start + len(cs)] for key, values in encoded.items()}
            start += len(cs)
            if labels is not None:
                feature["labels"] = labels[i]
            features.append(feature)
        return features

    def collator(self, tokenizer):
        from transformers import DataCollatorForMultipleChoice

        return DataCollatorForMultipleChoice(tokenizer)

    def model_kwargs(self, labels):
        return {}  # one score per choice: the head's size does not depend on the labels


def test_a_new_task_type_is_one_class(bert_dir, tmp_path, monkeypatch):
    """Registering one class is all it takes: prepare-task reads files of the new type and
    `minialbert finetune` puts the type's head on the model, trains it and scores it."""
    monkeypatch.setitem(TASK_TYPES, "choice", MultipleChoice())  # removed again after the test
    rng = random.Random(0)
    for split, n in (("train", 12), ("dev", 6)):
        rows = [json.dumps({"question": sentence(rng, 5), "options": [sentence(rng, 3) for _ in range(3)],
                            "answer": str(i % 3)}) for i in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "mc.yaml").write_text("name: mc\nsource: files\ntype: choice\ntext_columns: [question, options]\n"
                                      "label_column: answer\nfiles: {train: train.jsonl, dev: dev.jsonl}\n")
    assert cli_main(["prepare-task", "--spec", str(tmp_path / "mc.yaml"), "--output", str(tmp_path / "mc")]) == 0
    info = json.loads((tmp_path / "mc" / "task.json").read_text())
    assert info["type"] == "choice" and info["labels"] == ["0", "1", "2"] and info["main_metric"] == "accuracy"
    prepared = load_task(tmp_path / "mc")
    assert prepared.task_type is TASK_TYPES["choice"] and len(prepared.splits["dev"]["choices"][0]) == 3
    assert prepared.splits["train"]["label"] == [i % 3 for i in range(12)]

    metrics = run_cli(bert_dir, tmp_path / "mc", tmp_path / "out", "full", "--epochs", "1", "--save-model")
    assert metrics["task_type"] == "choice" and metrics["main_metric"] == "accuracy"
    assert set(metrics["dev"]) == {"accuracy", "f1_macro", "matthews_correlation"}
    assert json.loads((tmp_path / "out" / "model" / "config.json").read_text())["architectures"] == [
        "BertForMultipleChoice"]
