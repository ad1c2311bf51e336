#!/usr/bin/env bash
# Install (from Debian's packages) and start a real single-node Slurm cluster on
# this machine, for tests of the Slurm integration. Needs root; works without
# systemd (the packages never start daemons here, so we start them ourselves).
#
# Idempotent: when the daemons already run with the same config and the node
# is up (idle, or busy with jobs), it only reports and exits 0. A changed
# config (other knobs, CPUs, memory) restarts slurmctld and slurmd: jobs
# survive, but the controller is unreachable for a few seconds, which other
# users of the cluster will notice. Stop everything with slurm-down.sh.
#
# Knobs (environment):
#   SLURM_UP_CRED_EXPIRE  AuthInfo cred_expire in s (default 10, minimum 5). A
#                         requeued job stays PENDING for cred_expire+1 s before it
#                         restarts; Slurm's default of 120 makes requeue tests crawl.
#   SLURM_UP_SCHED_INTERVAL  seconds between main scheduler passes (default 5). A
#                         requeued job becomes eligible after cred_expire+1 s but
#                         only starts at the next pass, so this adds 0..N s more.
#   SLURM_UP_TIMEOUT      seconds to wait for the node to become idle (default 30)
#   SLURM_UP_CLUSTER      ClusterName (default ci)
#   SLURM_UP_PARTITION    name of the default partition (default debug)
#   SLURM_UP_MIN_JOB_AGE  seconds a finished job stays visible to `scontrol show
#                         job` (default 300; there is no accounting, so no sacct)
#   SLURM_UP_MIN_CPUS     the node offers at least this many CPUs (default 2), so a
#                         job of 2 tasks (the multi-task tests) fits on a 1-core
#                         machine too; beyond nproc the CPUs are oversubscribed
#                         (SlurmdParameters=config_overrides, no task binding)
set -euo pipefail

CRED_EXPIRE=${SLURM_UP_CRED_EXPIRE:-10}
TIMEOUT=${SLURM_UP_TIMEOUT:-30}
CLUSTER=${SLURM_UP_CLUSTER:-ci}
PARTITION=${SLURM_UP_PARTITION:-debug}
MIN_JOB_AGE=${SLURM_UP_MIN_JOB_AGE:-300}
SCHED_INTERVAL=${SLURM_UP_SCHED_INTERVAL:-5}
MIN_CPUS=${SLURM_UP_MIN_CPUS:-2}

PACKAGES=(slurmctld slurmd slurm-client munge)
CONF=/etc/slurm/slurm.conf
CTLD_PIDFILE=/run/slurmctld.pid
SLURMD_PIDFILE=/run/slurmd.pid
MUNGE_PIDFILE=/run/munge/munged.pid
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

HOST=$(hostname -s)
T0=$(date +%s.%N)
INSTALL_S=0

log() { printf 'slurm-up: %s\n' "$*" >&2; }
die() { printf 'slurm-up: ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

require_root() {
    # Installing packages, writing /etc and starting daemons as their users all need root.
    [[ $(id -u) -eq 0 ]] || die "must run as root (uid is $(id -u)); try: sudo $0"
}

check_knobs() {
    local name
    for name in CRED_EXPIRE SCHED_INTERVAL TIMEOUT MIN_JOB_AGE MIN_CPUS; do
        [[ ${!name} =~ ^[0-9]+$ ]] || die "SLURM_UP_$name must be a whole number, got '${!name}'"
    done
    # Slurm 22.05 rejects cred_expire < 5 ("AuthInfo=cred_expire=3 invalid" in
    # the logs) and silently falls back to 120 s, the opposite of what was asked.
    ((CRED_EXPIRE >= 5)) || die "SLURM_UP_CRED_EXPIRE must be >= 5 (Slurm ignores smaller values), got $CRED_EXPIRE"
    ((SCHED_INTERVAL >= 1)) || die "SLURM_UP_SCHED_INTERVAL must be >= 1, got $SCHED_INTERVAL"
    ((MIN_CPUS >= 1)) || die "SLURM_UP_MIN_CPUS must be >= 1, got $MIN_CPUS"
}

take_lock() {
    # Several test sessions may call us at once: serialise them so only one
    # installs and starts daemons; the others then find everything running.
    # Daemons must be started with 9>&-: one that inherits fd 9 holds the lock
    # for as long as it runs, and every later slurm-up.sh would block here.
    exec 9>/run/slurm-up.lock
    flock -w 900 9 || die "another slurm-up.sh holds /run/slurm-up.lock for too long"
}

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

install_packages() {
    local missing t
    missing=$(missing_packages)
    [[ -z $missing ]] && return 0
    log "installing: $(echo $missing)"
    t=$(date +%s.%N)
    # Update the lists only when we must install: it is the slow, network-bound step.
    apt-get update -q >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${PACKAGES[@]}" >/dev/null \
        || die "apt-get install ${PACKAGES[*]} failed"
    INSTALL_S=$(elapsed "$t")
    log "installed in ${INSTALL_S}s"
}

ensure_host_resolves() {
    # slurmctld and slurmd look the node up by name; an unresolvable hostname
    # leaves the node down with "Unable to resolve" in the logs.
    getent hosts "$HOST" >/dev/null && return 0
    log "adding '$HOST' to /etc/hosts"
    printf '127.0.0.1\t%s\n' "$HOST" >>/etc/hosts
}

# True when the pid in pidfile $1 is alive and really is program $2 (a stale
# pidfile may name a recycled pid that belongs to something else). A zombie
# counts as dead: a container's PID 1 may never reap an exited daemon.
pid_running() {
    local pid stat
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }  # the state follows "(comm) "
    [[ ${stat%% *} != Z ]]
}

setup_munge() {
    # Slurm authenticates every RPC with munge, so munged must run first.
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating munge key"
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key  # munged refuses a key others can read
    # /run is a tmpfs without systemd-tmpfiles here, so the socket dir may be gone.
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if ! pid_running "$MUNGE_PIDFILE" munged; then
        log "starting munged"
        rm -f "$MUNGE_PIDFILE"
        runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 9>&- \
            || die "munged failed to start; see /var/log/munge/munged.log"
    fi
    munge -n | unmunge >/dev/null || die "munge round trip failed; see /var/log/munge/munged.log"
}

# The node's CPU count: the machine's, raised to MIN_CPUS.
node_cpus() {
    local cpus
    cpus=$(nproc)
    echo $((cpus > MIN_CPUS ? cpus : MIN_CPUS))
}

render_conf() {
    local cpus mem_mb overrides=""
    cpus=$(node_cpus)
    # More CPUs than the machine has: slurmd would drain the node ("Low CPUs") unless it
    # takes the configured values as they are.
    (( cpus > $(nproc) )) && overrides=$'\n# More CPUs than nproc (SLURM_UP_MIN_CPUS): use the configured count as it is.\nSlurmdParameters=config_overrides'
    # Leave 1 GiB for the OS; slurmd drains a node that reports less memory than configured.
    mem_mb=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 - 1024 }' /proc/meminfo)
    cat <<EOF
# Written by scripts/slurm-up.sh; edits are overwritten on the next run.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
AuthType=auth/munge
# A requeued job waits cred_expire+1 s before it may start again (default 120).
AuthInfo=cred_expire=$CRED_EXPIRE
CryptoType=crypto/munge
SlurmUser=slurm
SlurmctldPidFile=$CTLD_PIDFILE
SlurmdPidFile=$SLURMD_PIDFILE
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
MailProg=/bin/true
MpiDefault=none
# linuxproc leaks children that a batch shell leaves behind; pgid does not.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
# No slurmdbd, so no sacct: use scontrol show job (finished jobs kept MinJobAge s).
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2,sched_interval=$SCHED_INTERVAL
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
MinJobAge=$MIN_JOB_AGE
KillWait=5$overrides
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

# Writes slurm.conf; returns 0 if it changed, 1 if it was already current.
write_conf() {
    local new
    new=$(render_conf)
    [[ -f $CONF && $(<"$CONF") == "$new" ]] && return 1
    install -d -m 0755 /etc/slurm
    printf '%s\n' "$new" >"$CONF.tmp"
    chmod 0644 "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"  # atomic: a daemon never reads half a file
    return 0
}

make_dirs() {
    # slurmctld runs as SlurmUser (slurm): it writes its state, its log and the
    # jobcomp log. slurmd runs as root and owns its spool.
    install -d -o slurm -g slurm -m 0755 "$STATE_DIR" "$LOG_DIR"
    install -d -o root -g root -m 0755 "$SPOOL_DIR"
}

# Starts daemon $1 (absolute path) unless pidfile $2 names a live one, then waits
# for the pidfile: the daemons fork, and slurmd writes its pidfile only after
# its parent has returned.
start_daemon() {
    local bin=$1 pidfile=$2 name i
    name=$(basename "$bin")
    pid_running "$pidfile" "$name" && return 0
    log "starting $name"
    rm -f "$pidfile"
    # /dev/null for all three streams so a daemon never holds a caller's pipe
    # open (CI steps and subprocess.run would otherwise hang until it exits);
    # 9>&- so it does not keep our lock (see take_lock).
    "$bin" </dev/null >/dev/null 2>&1 9>&- || fail "$name exited with status $?"
    for ((i = 0; i < 100; i++)); do
        pid_running "$pidfile" "$name" && return 0
        sleep 0.1
    done
    fail "$name did not write a live pid to $pidfile within 10 s"
}

node_state() {
    sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n 1
}

# Prints an error and the tail of the logs that usually say why, then exits.
fail() {
    local f
    printf 'slurm-up: ERROR: %s\n' "$1" >&2
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" /var/log/munge/munged.log; do
        [[ -f $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

wait_idle() {
    local deadline state=""
    deadline=$(($(date +%s) + TIMEOUT))
    while (($(date +%s) < deadline)); do
        state=$(node_state)
        # "idle" on a fresh start; mixed/allocated/completing when jobs already
        # run. A trailing "*" (not responding) or drain/down means not yet up.
        case $state in idle | mixed | allocated | completing) return 0 ;; esac
        sleep 0.2
    done
    fail "node $HOST not idle after ${TIMEOUT}s (sinfo state: '${state:-none}')"
}

daemons_up() {
    pid_running "$CTLD_PIDFILE" slurmctld && pid_running "$SLURMD_PIDFILE" slurmd
}

summary() {
    local verb=$1
    printf 'slurm-up: %s: Slurm %s, node %s (%s CPUs, %s MB), partition %s, cred_expire=%ss, sched_interval=%ss\n' \
        "$verb" "$(sinfo -V | awk '{ print $2 }')" "$HOST" "$(node_cpus)" \
        "$(sed -n "s/^NodeName=.*RealMemory=\([0-9]*\).*/\1/p" "$CONF")" "$PARTITION" "$CRED_EXPIRE" "$SCHED_INTERVAL"
    printf 'slurm-up: slurmctld pid %s, slurmd pid %s, munged pid %s; logs in %s\n' \
        "$(<"$CTLD_PIDFILE")" "$(<"$SLURMD_PIDFILE")" "$(<"$MUNGE_PIDFILE")" "$LOG_DIR"
    printf 'slurm-up: install %s, total %ss\n' \
        "$([[ $INSTALL_S == 0 ]] && echo "skipped (installed)" || echo "${INSTALL_S}s")" "$(elapsed "$T0")"
    sinfo
}

main() {
    require_root
    check_knobs
    take_lock
    install_packages
    ensure_host_resolves
    setup_munge
    make_dirs
    if write_conf; then
        # A new config (other knobs, CPUs or memory) needs fresh daemons:
        # `scontrol reconfigure` does not apply every setting.
        if pid_running "$CTLD_PIDFILE" slurmctld || pid_running "$SLURMD_PIDFILE" slurmd; then
            log "slurm.conf changed: restarting the Slurm daemons"
            SLURM_DOWN_KEEP_MUNGE=1 "$SCRIPT_DIR/slurm-down.sh"
        fi
    elif daemons_up; then
        wait_idle  # returns at once unless the node is still coming up
        summary "already running"
        return 0
    fi
    start_daemon /usr/sbin/slurmctld "$CTLD_PIDFILE"
    start_daemon /usr/sbin/slurmd "$SLURMD_PIDFILE"
    wait_idle
    summary "up"
}

main "$@"
