#!/usr/bin/env bash
# Stop the single-node Slurm cluster that slurm-up.sh started: slurmd,
# slurmctld, then munged. Idempotent: nothing running is fine.
#
# Daemons are stopped by the pid in their pidfile, never by name, so nothing
# else on the machine (another cluster, a test's own processes) is touched.
# Stale pidfiles are removed: a stale /run/slurmctld.pid makes a later
# `apt-get remove slurmctld` fail.
#
# Knobs (environment):
#   SLURM_DOWN_TIMEOUT     seconds to wait for each daemon after SIGTERM before
#                          SIGKILL (default 20)
#   SLURM_DOWN_KEEP_MUNGE  1 = leave munged running (slurm-up.sh uses this when
#                          it restarts Slurm for a changed slurm.conf)
#
# Jobs' slurmstepd processes are not killed here; slurmctld keeps its state in
# StateSaveLocation and picks the jobs up again on the next slurm-up.sh.
set -euo pipefail

TIMEOUT=${SLURM_DOWN_TIMEOUT:-20}
KEEP_MUNGE=${SLURM_DOWN_KEEP_MUNGE:-0}

log() { printf 'slurm-down: %s\n' "$*" >&2; }
die() { printf 'slurm-down: ERROR: %s\n' "$*" >&2; exit 1; }

require_root() {
    # The daemons run as root, slurm and munge: only root may signal them all.
    [[ $(id -u) -eq 0 ]] || die "must run as root (uid is $(id -u)); try: sudo $0"
}

# True when pid $1 runs program $2. A zombie counts as gone: in a container
# whose PID 1 never reaps, an exited daemon stays a zombie for good.
is_alive() {
    local stat
    [[ $(cat "/proc/$1/comm" 2>/dev/null) == "$2" ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }  # the state follows "(comm) "; comm itself may hold spaces
    [[ ${stat%% *} != Z ]]
}

# Prints the pid in pidfile $1 if it is alive and really is program $2; a stale
# pidfile may name a recycled pid that now belongs to something else.
live_pid() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    is_alive "$pid" "$2" || return 1
    echo "$pid"
}

# Waits up to $2 seconds for pid $1 (program $3) to exit; 0 if it did.
wait_exit() {
    local pid=$1 secs=$2 name=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        is_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    return 1
}

# Stops program $2 whose pidfile is $1: SIGTERM, wait, SIGKILL as a last resort.
stop_daemon() {
    local pidfile=$1 name=$2 pid
    if pid=$(live_pid "$pidfile" "$name"); then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true  # it may exit between check and kill
        if ! wait_exit "$pid" "$TIMEOUT" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for ${TIMEOUT}s: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_exit "$pid" 5 "$name" || die "$name (pid $pid) is still running"
        fi
    fi
    # Whatever is left in the pidfile now names no live daemon.
    rm -f "$pidfile"
}

main() {
    require_root
    [[ $TIMEOUT =~ ^[0-9]+$ ]] || die "SLURM_DOWN_TIMEOUT must be a whole number, got '$TIMEOUT'"
    # slurmd first: it reports to slurmctld as it goes, and both need munge.
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
    [[ $KEEP_MUNGE == 1 ]] || stop_daemon /run/munge/munged.pid munged
    log "stopped"
}

main "$@"
