#!/usr/bin/env bash
# Stop the S3 server that scripts/s3-up.sh started (same S3_UP_HOME / S3_UP_DIR), by its pid file.
# SIGTERM, then SIGKILL after S3_DOWN_TIMEOUT seconds (default 10). Its data stays in $S3_UP_DIR/data
# (remove the folder to start empty). Exits 0 when nothing runs.
set -euo pipefail

S3_HOME=${S3_UP_HOME:-$HOME/.cache/unbroken/seaweedfs}
DIR=${S3_UP_DIR:-$S3_HOME/run}
PIDFILE=$DIR/weed.pid
TIMEOUT=${S3_DOWN_TIMEOUT:-10}

log() { printf 's3-down: %s\n' "$*" >&2; }
alive() {  # a zombie (exited, not yet reaped) counts as stopped
    kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]
}

[[ -s $PIDFILE ]] || { log "not running (no $PIDFILE)"; exit 0; }
PID=$(cat "$PIDFILE")
if ! alive "$PID"; then
    log "not running (pid $PID is gone)"
    rm -f "$PIDFILE"
    exit 0
fi
# Make sure the pid is still our weed and not a reused pid of something else.
if ! tr '\0' ' ' < "/proc/$PID/cmdline" 2>/dev/null | grep -q "weed mini"; then
    log "pid $PID is not a weed server any more; removing the stale $PIDFILE"
    rm -f "$PIDFILE"
    exit 0
fi
kill -TERM "$PID"
deadline=$((SECONDS + TIMEOUT))
while alive "$PID" && (( SECONDS < deadline )); do sleep 0.1; done
if alive "$PID"; then
    log "pid $PID did not stop within ${TIMEOUT}s: SIGKILL"
    kill -KILL "$PID" 2>/dev/null || true
fi
rm -f "$PIDFILE"
log "stopped pid $PID"
