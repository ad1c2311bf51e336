#!/usr/bin/env bash
# Set up .venv and run the demo: a real PyTorch training that is killed and resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
