#!/usr/bin/env bash
# The GPU check of issue 18: one command, about 5 minutes on one GPU, one JSON file
# ($OUT/gpu_check.json, else ./gpu_check.json): the device, its precision, the student's SDPA
# kernel, the paper-shape distillation step eager and compiled, a fine-tuning step.
#   bash bench/gpu_check.sh          # on a GPU machine
#   bash bench/gpu_check.sh --dry    # the same code at tiny shapes on the CPU (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 900 "$PYTHON" bench/gpu_check.py "$@"
