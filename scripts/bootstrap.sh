#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install minialbert into it.
# torch is installed first, pinned, so that pip takes the CPU build instead of resolving a
# CUDA build with several GB of NVIDIA packages. On a GPU cluster, set TORCH_INDEX_URL to the
# PyTorch CUDA wheel index of your CUDA version (e.g. .../whl/cu128) before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=2.13.0

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the dependency list changed.
stamp="$VENV/.minialbert-installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
    else
        "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
    fi
    "$VENV/bin/python" -m pip install --quiet -e ".[test,slurm]"
    rm -f "$VENV"/.minialbert-installed-*
    touch "$stamp"
fi
