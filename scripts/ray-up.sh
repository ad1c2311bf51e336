#!/usr/bin/env bash
# Start a one-node Ray head on loopback for the tests (idempotent) and print the address to use:
#   eval "$(bash scripts/ray-up.sh)"   # exports RAY_ADDRESS=127.0.0.1:6390
# Needs Ray (pip install -e '.[ray]'); about 9 s and 480 MB. Stop it with scripts/ray-down.sh.
set -euo pipefail
PORT="${UNBROKEN_RAY_PORT:-6390}"
TEMP="${UNBROKEN_RAY_TEMP:-/tmp/unbroken-ray-$PORT}"
RAY="${RAY:-$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.venv/bin/ray}"
[ -x "$RAY" ] || RAY="$(command -v ray || true)"
if [ -z "$RAY" ]; then echo "ray-up.sh: ray is not installed (pip install -e '.[ray]')" >&2; exit 1; fi
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    "$RAY" start --head --port="$PORT" --num-cpus=2 --include-dashboard=false --disable-usage-stats \
        --node-ip-address=127.0.0.1 --temp-dir="$TEMP" >&2
fi
echo "export RAY_ADDRESS=127.0.0.1:$PORT"
