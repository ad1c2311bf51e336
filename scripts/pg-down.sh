#!/usr/bin/env bash
# Stop the throwaway PostgreSQL cluster that scripts/pg-up.sh started (found by its pid file).
#
#   bash scripts/pg-down.sh            # stop it; the data stays for the next pg-up.sh
#   bash scripts/pg-down.sh --purge    # stop it and delete its folder
#
# Knobs: UNBROKEN_PG_DIR (default /tmp/unbroken-pg), as for pg-up.sh. Idempotent.
set -euo pipefail

DIR=${UNBROKEN_PG_DIR:-/tmp/unbroken-pg}
DATA=$DIR/data
PIDFILE=$DATA/postmaster.pid

log() { printf 'pg-down: %s\n' "$*" >&2; }

if [[ -f $PIDFILE ]]; then
    PID=$(head -n 1 "$PIDFILE")
    if [[ $PID =~ ^[0-9]+$ ]] && kill -0 "$PID" 2>/dev/null; then
        log "stopping the server (pid $PID)"
        kill -INT "$PID"  # fast shutdown: roll back open transactions, close connections
        for _ in $(seq 1 600); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$PID" 2>/dev/null; then
            log "still running after 60 s: immediate shutdown"
            kill -QUIT "$PID" 2>/dev/null || true
        fi
    else
        log "no server runs (stale pid file)"
    fi
else
    log "no server runs in $DATA"
fi
if [[ ${1:-} == --purge ]]; then
    rm -rf "$DIR"
    log "removed $DIR"
fi
