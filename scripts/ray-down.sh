#!/usr/bin/env bash
# Stop the Ray head that scripts/ray-up.sh started: only the processes that run from its own
# temporary folder, by their pids (another Ray on the machine is left alone).
set -uo pipefail
PORT="${UNBROKEN_RAY_PORT:-6390}"
TEMP="${UNBROKEN_RAY_TEMP:-/tmp/unbroken-ray-$PORT}"
pids=$(pgrep -f -- "$TEMP" || true)
pids="$pids $(pgrep -f -- "--gcs-address=127.0.0.1:$PORT" || true) $(pgrep -f -- "gcs_server .*--gcs_server_port=$PORT" || true)"
for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
for _ in $(seq 50); do
    alive=""
    for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && exit 0
    sleep 0.1
done
for pid in $alive; do kill -KILL "$pid" 2>/dev/null || true; done
