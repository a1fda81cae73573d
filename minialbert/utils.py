"""Small shared helpers: canonical config hashing, atomic file and directory writes, errors."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class ConfigError(ValueError):
    """Bad user input (config, data file, checkpoint, CLI argument); the message names
    the file, the field and what was expected."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """', did you mean 'seeds'?' when a choice is close to the misspelt `word` (difflib), else ''."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f", did you mean {close[0]!r}?" if close else ""


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def shown_value(value: Any) -> str:
    """`value` as an error message shows it, with a hint when it is a string that was probably
    meant as a number: YAML 1.1 (PyYAML) reads 1e-3 as text, a float needs a dot and a signed
    exponent (1.0e-3)."""
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _NUMBER.match(text):
        return repr(value)
    mantissa, _, exponent = text.replace("E", "e").partition("e")
    if exponent and ("." not in mantissa or exponent[0] not in "+-"):
        mantissa = mantissa + ".0" if "." not in mantissa else mantissa + "0" if mantissa.endswith(".") else mantissa
        exponent = exponent if exponent[0] in "+-" else "+" + exponent
        return f"{value!r} (a string: YAML 1.1 reads {text} as text; write {mantissa}e{exponent})"
    return f"{value!r} (a string: write the number without quotes)"


def canonical_json(obj: Any) -> str:
    """Serialise `obj` canonically (sorted keys, no whitespace) so equal configs hash equal."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def config_hash(obj: Any, length: int = 12) -> str:
    """Short, stable SHA-256 of the canonical JSON of `obj`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(dst: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory beside `dst`; on success it replaces `dst` in one rename.

    On any error the temporary directory is removed and `dst` is left as it was, so a
    half-written output never looks complete.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: already exists")
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        yield tmp
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read JSON, turning a missing or malformed file into a ConfigError that names it."""
    path = Path(path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) from a JSON-lines file, skipping blank lines; a line that
    is not a JSON object is a ConfigError naming the file and the line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}: line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def load_yaml(path: str | os.PathLike) -> dict:
    """Read a YAML mapping, naming the file on any problem."""
    import yaml

    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
