"""Refuse a workflow profile whose placeholders were not filled in, before any job is queued.

profiles/slurm/config.yaml ships with `"<your-account>"`, `"<cpu-partition>"`, ... in its EDIT
block; submitted as is, every sbatch fails (or, worse, queues on a default account). The
Snakefile calls `check_profiles_in_use(sys.argv, os.environ, workflow.basedir)` when the DAG is
built; `check_profile(dir)` checks one profile dir.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from minialbert.utils import ConfigError

PLACEHOLDER = re.compile(r"^<[^<>\s][^<>]*>$")  # "<your-account>"; not "" or "a100"
PROFILE_FILES = ("config.yaml", "profile.yaml")
PROFILE_FLAGS = ("--profile", "--workflow-profile")


def placeholders(path: str | os.PathLike) -> list[tuple[int, str, str]]:
    """(line, dotted key, value) of every `<...>` placeholder value of a profile YAML file; a
    value shared through an anchor is reported once, where it is written."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    found, seen = [], set()

    def walk(node, key: str) -> None:
        if id(node) in seen:  # an alias of an anchor already visited
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                walk(v, f"{key}.{k.value}" if key else str(k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, f"{key}[{i}]")
        elif isinstance(node, yaml.ScalarNode) and PLACEHOLDER.match(node.value.strip()):
            found.append((node.start_mark.line + 1, key, node.value))

    if root is not None:
        walk(root, "")
    return found


def profile_file(profile_dir: str | os.PathLike) -> Path | None:
    """The config file of a profile dir (or the file itself), None if there is none."""
    path = Path(profile_dir)
    if path.is_file():
        return path
    return next((path / n for n in PROFILE_FILES if (path / n).is_file()), None)


def check_profile(profile_dir: str | os.PathLike) -> None:
    """ConfigError naming the file, line and key of every unedited `<...>` placeholder."""
    path = profile_file(profile_dir)
    if path is None:
        return
    found = placeholders(path)
    if found:
        lines = "\n  ".join(f"{path}:{line}: {key}: {value}" for line, key, value in found)
        raise ConfigError(f"workflow profile {path} still has placeholders; edit them for your cluster (the EDIT "
                          f"block at its top) before submitting jobs:\n  {lines}")


def profiles_in_use(argv: Sequence[str], environ: Mapping[str, str], basedir: str | os.PathLike) -> list[Path]:
    """The profile dirs a `snakemake` command line uses: --profile / --workflow-profile (or
    $SNAKEMAKE_PROFILE), a name resolved against the working directory, then the Snakefile's
    `profiles/`; the default workflow profile (profiles/default) when none is given."""
    given: dict[str, str] = {}
    args = list(argv)
    for i, arg in enumerate(args):
        for flag in PROFILE_FLAGS:
            if arg == flag and i + 1 < len(args):
                given[flag] = args[i + 1]
            elif arg.startswith(flag + "="):
                given[flag] = arg.split("=", 1)[1]
    if "--profile" not in given and environ.get("SNAKEMAKE_PROFILE"):
        given["--profile"] = environ["SNAKEMAKE_PROFILE"]
    if given.get("--workflow-profile") == "none":
        given.pop("--workflow-profile")
    elif "--workflow-profile" not in given:
        given["--workflow-profile"] = "default"
    dirs = []
    for name in given.values():
        for candidate in (Path(name), Path(basedir) / name, Path(basedir) / "profiles" / name):
            if profile_file(candidate) is not None:
                dirs.append(candidate)
                break
    return dirs


def check_profiles_in_use(argv: Sequence[str], environ: Mapping[str, str], basedir: str | os.PathLike) -> None:
    """`check_profile` on every profile the command line uses."""
    for profile in profiles_in_use(argv, environ, basedir):
        check_profile(profile)
