#!/usr/bin/env bash
# Create .venv (once) and install unbroken with the extras the demo and the tests need
# (PostgreSQL, S3, dashboard, sweeps and Ray included: the tests run them against real servers).
# torch is pinned to 2.13.0: on the project's machines that is a local CPU build (fast);
# an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${UNBROKEN_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[torch,dev,bench,postgres,s3,ui,sweep,ray,keras,transformers,lightning]"
echo "setup: $(.venv/bin/python -c 'import unbroken, torch; print("unbroken", unbroken.__version__, "torch", torch.__version__)')"
