#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on the loopback, for the tests and benchmarks of the
# tracking index. Needs root; works without systemd (it starts the server itself).
#
#   eval "$(bash scripts/pg-up.sh)"      # sets UNBROKEN_DB=postgresql://postgres@127.0.0.1:PORT/unbroken
#
# Idempotent: a cluster already running in the folder is kept (its database is created if
# missing). Installs Debian's postgresql when no server binaries are found. The cluster trusts
# every local connection (no passwords) and listens on 127.0.0.1 only: it is for tests, never
# for data you want to keep. Stop it with scripts/pg-down.sh.
#
# Knobs (environment):
#   UNBROKEN_PG_DIR   folder of the cluster (default /tmp/unbroken-pg): data/, log, socket
#   UNBROKEN_PG_PORT  TCP port on 127.0.0.1 (default 54329)
#   UNBROKEN_PG_DB    database to create (default unbroken)
#   UNBROKEN_PG_OPTS  extra server options, e.g. "-c fsync=off" (only when the cluster starts)
# Only the export line goes to stdout; everything else goes to stderr.
set -euo pipefail

DIR=${UNBROKEN_PG_DIR:-/tmp/unbroken-pg}
PORT=${UNBROKEN_PG_PORT:-54329}
DB=${UNBROKEN_PG_DB:-unbroken}
OPTS=${UNBROKEN_PG_OPTS:-}
DATA=$DIR/data

log() { printf 'pg-up: %s\n' "$*" >&2; }
die() { printf 'pg-up: ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (uid is $(id -u)): it may install packages and runs the server as the postgres user"
[[ $PORT =~ ^[0-9]+$ ]] || die "UNBROKEN_PG_PORT must be a port number, got '$PORT'"
[[ $DB =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "UNBROKEN_PG_DB must be a plain identifier, got '$DB'"

pg_bin() {
    # The newest installed server's bin folder (Debian keeps them in /usr/lib/postgresql/<major>/bin).
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

BIN=$(pg_bin)
if [[ -z $BIN || ! -x $BIN/initdb ]]; then
    log "installing postgresql (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q postgresql >&2
    BIN=$(pg_bin)
    [[ -n $BIN && -x $BIN/initdb ]] || die "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"
fi

as_postgres() { runuser -u postgres -- "$@"; }

mkdir -p "$DIR"
chown postgres: "$DIR"
chmod 0700 "$DIR"
if [[ ! -f $DATA/PG_VERSION ]]; then
    log "initdb $DATA"
    as_postgres "$BIN/initdb" -D "$DATA" -A trust -U postgres --no-sync >"$DIR/initdb.log" 2>&1 \
        || { tail -n 20 "$DIR/initdb.log" >&2; die "initdb failed (log: $DIR/initdb.log)"; }
fi

if as_postgres "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "already running in $DATA"
else
    log "starting on 127.0.0.1:$PORT"
    as_postgres "$BIN/pg_ctl" -D "$DATA" -l "$DIR/log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 $OPTS" start >&2 \
        || { tail -n 20 "$DIR/log" >&2; die "the server did not start (log: $DIR/log)"; }
fi

# The port of the running server (its options win over a changed UNBROKEN_PG_PORT).
PORT=$(sed -n 4p "$DATA/postmaster.pid")
PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
if [[ $("${PSQL[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
    log "creating database $DB"
    "${PSQL[@]}" -c "CREATE DATABASE \"$DB\"" >&2
fi
echo "export UNBROKEN_DB=postgresql://postgres@127.0.0.1:$PORT/$DB"
