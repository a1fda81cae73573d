"""The package's import graph: one direction, no cycle, counting imports inside functions too;
and the entry points stay light (no torch to import the package or answer --help)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "minialbert"


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (top level or inside a
    function; `from a import b` counts `a.b` when it is a module, else `a`)."""
    modules = {module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "minialbert"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from minialbert.b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("import os\n\ndef g():\n    from ..a import x\n")
    graph = import_graph(pkg)
    assert graph["minialbert.sub.c"] == {"minialbert.a"}
    assert find_cycle(graph) == ["minialbert.a", "minialbert.b", "minialbert.sub.c", "minialbert.a"]
    (pkg / "sub" / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg)) is None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"minialbert.objective", "minialbert.loss_terms", "minialbert.modeling"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_building_blocks_sit_below_the_model_and_commands_above_the_library():
    graph = import_graph()
    for low in ("minialbert.blocks", "minialbert.recursions", "minialbert.loss_terms", "minialbert.command_configs",
                "minialbert.utils"):
        assert not graph[low] & {"minialbert.modeling", "minialbert.adapters", "minialbert.cli",
                                 "minialbert.objective", "minialbert.training"}, (low, graph[low])
    library = [m for m in graph if m not in ("minialbert.cli",)]
    assert not [m for m in library if "minialbert.cli" in graph[m]], "the library must not import the CLI"


def test_import_minialbert_and_help_load_no_torch():
    code = ("import json, subprocess, sys, time; t = time.perf_counter(); import minialbert; "
            "from minialbert.cli import main; "
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['--help'])\n"
            "    except SystemExit: pass\n"
            "print(json.dumps([m for m in ('torch', 'transformers') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
