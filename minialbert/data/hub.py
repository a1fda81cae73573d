"""Hub datasets in two steps: fetched where the internet is, read where it is not.

Cluster compute nodes usually have no internet. The workflow therefore splits every hub read
into a fetch on the submit host (`fetch_dataset`: the files of one dataset config into the
Hugging Face cache under HF_HOME, as `huggingface_hub.snapshot_download` lays them out) and the
processing on a compute node, which runs with HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1 and
reads the dataset from that snapshot dir (`go_offline`), a plain local dataset dir to
`datasets.load_dataset`.
"""

from __future__ import annotations

import fnmatch
import json
import os
from pathlib import Path
from typing import Any

from minialbert.utils import ConfigError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv",
            ".arrow": "arrow", ".txt": "text"}
_SNAPSHOTS: dict[tuple[str, str | None], tuple[str, dict[str, list[str]]]] = {}  # set by go_offline


def split_patterns(card_metadata: dict, config: str | None) -> dict[str, list[str]] | None:
    """{split: file patterns} of one dataset config, from its card's `configs:` data_files;
    None when the card declares no such config."""
    for entry in card_metadata.get("configs") or []:
        if entry.get("config_name") != (config or "default"):
            continue
        files = entry.get("data_files")
        if isinstance(files, (str, dict)):
            files = [files]
        splits: dict[str, list[str]] = {}
        for item in files or []:
            split, paths = (item.get("split", "train"), item.get("path")) if isinstance(item, dict) else ("train", item)
            splits.setdefault(split, []).extend([paths] if isinstance(paths, str) else list(paths or []))
        if splits:
            return splits
    return None


def config_patterns(card_metadata: dict, config: str | None) -> list[str] | None:
    """The repo files one dataset config reads (its card's data_files, plus the card that
    declares them); None (every file) when the card declares no such config."""
    if config is None:
        return None
    splits = split_patterns(card_metadata, config)
    return ["README.md", *(p for patterns in splits.values() for p in patterns)] if splits else None


def fetch_dataset(repo: str, config: str | None = None, revision: str | None = None) -> dict[str, Any]:
    """Download dataset `repo` (only `config`'s files where its card says which) into the hub
    cache of HF_HOME; the record the processing step reads (repo, config, commit, snapshot)."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.repocard import metadata_load

    try:
        readme = hf_hub_download(repo, "README.md", repo_type="dataset", revision=revision)
        metadata = metadata_load(readme) or {}
    except Exception as e:  # no card: take the whole repo
        print(f"[hub] {repo}: no dataset card ({type(e).__name__}); fetching every file", flush=True)
        metadata = {}
    patterns = config_patterns(metadata, config)
    snapshot = snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=patterns)
    return {"repo": repo, "config": config, "revision": revision, "commit": Path(snapshot).name,
            "allow_patterns": patterns, "splits": split_patterns(metadata, config), "hf_home": hf_home(),
            "snapshot": snapshot}


def hf_home() -> str:
    """The Hugging Face home in effect (HF_HOME, else huggingface_hub's default)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")))


def go_offline(record_file: str | os.PathLike) -> str:
    """For the processing step: point HF_HOME at the cache the fetch step filled, switch the hub
    and datasets to offline mode (before either is imported: they read these at import), and
    return the local snapshot dir of the fetched dataset, checked to be in that cache."""
    record = json.loads(Path(record_file).read_text())
    os.environ["HF_HOME"] = record["hf_home"]
    for variable in OFFLINE_VARIABLES:
        os.environ[variable] = "1"
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = snapshot_download(record["repo"], repo_type="dataset", revision=record["commit"],
                                     local_files_only=True)
    except LocalEntryNotFoundError:
        raise ConfigError(f"{record_file}: dataset {record['repo']} (commit {record['commit']}) is not in the "
                          f"Hugging Face cache under HF_HOME={record['hf_home']}; fetch it again on a host "
                          "with internet (delete this file and rerun the workflow there)") from None
    files = sorted(str(f.relative_to(snapshot)) for f in Path(snapshot).rglob("*") if f.is_file())
    splits = record.get("splits") or _splits_by_name(files)
    data_files = {split: [str(Path(snapshot) / f) for f in files if any(fnmatch.fnmatch(f, p) for p in patterns)]
                  for split, patterns in splits.items()}
    missing = [split for split, found in data_files.items() if not found]
    if missing:
        raise ConfigError(f"{record_file}: the cached snapshot {snapshot} has no files of split(s) {missing} "
                          f"(patterns {[splits[s] for s in missing]})")
    _SNAPSHOTS[(record["repo"], record.get("config"))] = (snapshot, data_files)
    return snapshot


def _splits_by_name(files: list[str]) -> dict[str, list[str]]:
    """Split patterns of a dataset without a card config: by file name, as the hub does it."""
    splits: dict[str, list[str]] = {}
    for f in files:
        if Path(f).suffix not in BUILDERS:
            continue
        stem = Path(f).name.lower()
        split = next((s for s in ("train", "validation", "test") if stem.startswith(s)), "train")
        splits.setdefault(split, []).append(f)
    return splits


def load_dataset(name: str, config: str | None = None, split: str | None = None):
    """`datasets.load_dataset(name, config, split=split)`, or, for a dataset `go_offline` made
    available, the same splits read from its cached files. (Not the snapshot dir itself: its
    files are symlinks to extension-less blobs, which `datasets` cannot infer a reader for.)"""
    import datasets

    found = _SNAPSHOTS.get((name, config))
    if found is None:
        return datasets.load_dataset(name, config) if split is None else datasets.load_dataset(name, config, split=split)
    _, data_files = found
    suffixes = {Path(f).suffix for files in data_files.values() for f in files}
    builders = {BUILDERS.get(s) for s in suffixes}
    if len(builders) != 1 or None in builders:
        raise ConfigError(f"hub dataset {name} ({config}): cannot read files of types {sorted(suffixes)}")
    return datasets.load_dataset(builders.pop(), data_files=data_files, split=split)
