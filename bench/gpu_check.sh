#!/usr/bin/env bash
# The checks that need a GPU: the CUDA tests, then the checkpoint benchmark with CUDA tensors.
#
#   bash bench/gpu_check.sh [extra checkpoint_bench.py arguments]
#
# On a machine without a CUDA device (torch.cuda.is_available() is False) it says so and exits 0.
# Otherwise: every test whose name mentions cuda must run and pass (a skipped one fails this
# check), the whole checkpoint suite must pass, and checkpoint_bench.py --device cuda writes
# bench/results/gpu/results.md (1 GiB, 1 repetition unless arguments say otherwise; root for
# drop_caches). Exit status: that of the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check."
    exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)'

echo "gpu_check: CUDA tests (none may be skipped)"
"$PY" -m pytest -q -rs -k cuda tests | tee /tmp/gpu_check_tests.log
if grep -q "SKIPPED" /tmp/gpu_check_tests.log; then
    echo "gpu_check: a CUDA test was skipped on a machine with a GPU" >&2
    exit 1
fi

echo "gpu_check: checkpoint suite"
"$PY" -m pytest -q -x tests/checkpoint

echo "gpu_check: checkpoint benchmark with CUDA tensors"
"$PY" bench/checkpoint_bench.py --device cuda --sizes 1 --reps 1 --out bench/results/gpu "$@"
echo "gpu_check: wrote bench/results/gpu/results.md"
