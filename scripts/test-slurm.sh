#!/usr/bin/env bash
# The SLURM integration test: brings up the local one-node cluster (scripts/slurm-local-cluster.sh),
# runs the tiny workflow through profiles/slurm-local with a scancel, a requeue and a time-limit
# kill of distillation jobs, checks the multi-GPU launch and the per-attempt logs, then checks that
# editing one student submits only that student's jobs (scripts/slurm_test.py does the checks).
# Prints one summary line ("test-slurm: PASS | ..." or "test-slurm: FAIL | ..."); exit status 0
# only on PASS. Stops the daemons it started on exit, also on failure.
#
#   sudo bash scripts/test-slurm.sh          # needs root and apt (installs slurm-wlm etc.)
#
# SLURM_TEST_KEEP=1 keeps the test's workdir (printed) and leaves the cluster running.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

if [ "$(id -u)" != 0 ]; then
    echo "test-slurm: FAIL | needs root (it starts slurmctld, slurmd, slurmdbd, munged, mariadbd)"
    exit 1
fi
bash scripts/bootstrap.sh

started_here=0
if ! bash scripts/slurm-local-cluster.sh status | grep -q "^slurmctld: running"; then
    started_here=1
fi
cleanup() {
    rc=$?
    if [ "$started_here" = 1 ] && [ "${SLURM_TEST_KEEP:-0}" != 1 ]; then
        bash scripts/slurm-local-cluster.sh stop || true
    fi
    echo "test-slurm: wall time $(( $(date +%s) - start )) s"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! bash scripts/slurm-local-cluster.sh start; then
    echo "test-slurm: FAIL | the local cluster did not start (see above and /var/tmp/minialbert-slurm/log/)"
    exit 1
fi
.venv/bin/python scripts/slurm_test.py
