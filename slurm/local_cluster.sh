#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, private to one folder, for tests and CI.
#
#   slurm/local_cluster.sh start DIR    install Slurm + MUNGE if missing, write DIR/slurm.conf,
#                                       start munged, slurmctld, slurmd; wait for the node to be idle
#   slurm/local_cluster.sh stop DIR     cancel the jobs, stop the daemons started for DIR; idempotent
#   slurm/local_cluster.sh status DIR   sinfo and squeue for the cluster in DIR
#
# Everything (config, state, spool, logs, pid files, the MUNGE key and socket) lives under DIR,
# so several clusters and a system Slurm never collide, and `stop DIR; rm -rf DIR` leaves
# nothing behind. Progress goes to stderr; `start` prints only `export SLURM_CONF=...` on
# stdout, so `eval "$(slurm/local_cluster.sh start DIR)"` points the clients at the cluster.
# Needs root (the daemons run as SlurmUser=root) and Debian's slurmctld/slurmd/munge (22.05).
set -euo pipefail

# Daemons live in sbin, which a non-login shell may not have on PATH.
export PATH="$PATH:/usr/sbin:/sbin"

PROG=slurm/local_cluster.sh
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}   # seconds to wait for the node to become idle

usage() {
    cat >&2 <<EOF
usage: $PROG start|stop|status DIR

  start DIR    install slurmctld/slurmd/slurm-client/munge when missing, write DIR/slurm.conf,
               start munged, slurmctld and slurmd, wait (up to \$LOCAL_SLURM_TIMEOUT=${TIMEOUT} s)
               until the node is idle; the last line of stdout is
               'export SLURM_CONF=DIR/slurm.conf'. On timeout the logs are printed, the
               daemons stopped, and the exit status is 1.
  stop DIR     cancel every job of that cluster, stop its daemons (pid files under DIR) and wait
               for them to exit; does nothing when none runs.
  status DIR   sinfo and squeue through SLURM_CONF=DIR/slurm.conf.

Environment: LOCAL_SLURM_TIMEOUT (default 60), LOCAL_SLURM_CPUS (CPUs to declare for the
node, default \$(nproc); more than the machine has lets more jobs run at once),
LOCAL_SLURM_NO_INSTALL (set: fail when Slurm or MUNGE is missing instead of installing it).
EOF
    exit 2
}

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $# -eq 2 ]] || usage
CMD=$1
case $CMD in start|stop|status) ;; *) usage ;; esac
[[ -n $2 ]] || usage

# `start` creates DIR; stop/status only look at an existing one.
if [[ $CMD == start ]]; then
    mkdir -p -- "$2"
elif [[ ! -d $2 ]]; then
    if [[ $CMD == stop ]]; then log "no folder $2: nothing to stop"; exit 0; fi
    die "no folder $2 (run: $PROG start $2)"
fi
# Absolute path: it goes into slurm.conf and the daemons' command lines.
DIR=$(cd -- "$2" && pwd -P)
# slurm.conf has no quoting for paths.
[[ $DIR != *[[:space:]]* ]] || die "DIR must not contain whitespace: '$DIR'"

CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
MUNGED_PID=$DIR/run/munged.pid
CTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid
HOST=$(hostname -s)

# ---------------------------------------------------------------------------- helpers

# The pid in pid file $1 if that process is alive AND was started for this DIR (its command line
# names DIR), so a stale pid file can never make us signal an unrelated process.
our_pid() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

# SIGTERM the daemon of pid file $1, wait up to 20 s for it to exit, then SIGKILL it.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if ! pid=$(our_pid "$pidfile"); then
        rm -f -- "$pidfile"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        [[ -d /proc/$pid ]] || break
        # A zombie has exited; its parent (init) reaps it.
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    if [[ -d /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
        log "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f -- "$pidfile"
}

# A TCP port nobody listens on or uses, outside the kernel's ephemeral range (so an outgoing
# connection cannot grab it later); distinct from the ports given as arguments.
free_port() {
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + RANDOM % 12000))
        [[ " $* " == *" $port "* ]] && continue
        if command -v python3 >/dev/null 2>&1; then
            # Binding is the real test (slurmctld and slurmd bind every address).
            python3 - "$port" 2>/dev/null <<'EOF' || continue
import socket, sys
s = socket.socket()
s.bind(("", int(sys.argv[1])))
EOF
        else
            # No python: the port must not appear in any socket of /proc/net/tcp{,6}.
            awk -v p="$(printf '%04X' "$port")" \
                'FNR > 1 { split($2, a, ":"); if (a[2] == p) found = 1 } END { exit !found }' \
                /proc/net/tcp /proc/net/tcp6 2>/dev/null && continue
        fi
        echo "$port"
        return 0
    done
    die "found no free TCP port"
}

print_logs() {
    local f
    for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
        [[ -s $f ]] || continue
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 -- "$f" >&2
    done
}

# The node's state as sinfo prints it (idle, down*, unknown, ...), empty if slurmctld is unreachable.
node_state() {
    SLURM_CONF=$CONF timeout 10 sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n 1 || true
}

install_if_missing() {
    # rsync: the launcher's code snapshots (submitit's RsyncSnapshot) need it
    local missing=() c
    for c in sbatch slurmctld slurmd munged rsync; do
        command -v "$c" >/dev/null 2>&1 || missing+=("$c")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "slurm and munge are installed ($(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null || echo '?'))"
        return 0
    fi
    # the test suite never installs: it sets this, and `make system-packages` installs for CI
    [[ -z ${LOCAL_SLURM_NO_INSTALL:-} ]] ||
        die "missing ${missing[*]} (as root on Debian: make system-packages)"
    log "missing ${missing[*]}: installing slurmctld slurmd slurm-client munge rsync with apt-get"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge rsync >&2
    for c in sbatch slurmctld slurmd munged rsync; do
        command -v "$c" >/dev/null 2>&1 || die "$c still missing after apt-get install"
    done
}

# ---------------------------------------------------------------------------- stop / status

do_stop() {
    local ids i
    if [[ ! -d $DIR/run ]]; then
        log "nothing to stop in $DIR"
        return 0
    fi
    # Cancel the jobs first: slurmstepd and the job processes outlive slurmd by design, so
    # stopping the daemons alone would leave them running.
    if our_pid "$CTLD_PID" >/dev/null && our_pid "$SLURMD_PID" >/dev/null; then
        ids=$(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [[ -n ${ids// /} ]]; then
            log "cancelling jobs: $ids"
            # shellcheck disable=SC2086  # one argument per job id
            SLURM_CONF=$CONF timeout 10 scancel $ids 2>/dev/null || true
            # KillWait=5 plus some slack for the steps to report back.
            for ((i = 0; i < 30; i++)); do
                [[ -z $(SLURM_CONF=$CONF timeout 10 squeue -h -o %A 2>/dev/null || true) ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemon slurmd "$SLURMD_PID"
    stop_daemon slurmctld "$CTLD_PID"
    stop_daemon munged "$MUNGED_PID"
    # A job step that outlived the cancel: slurmd hands its slurmstepd SLURM_CONF=DIR/slurm.conf
    # (and little else of its environment), which tells it apart from any other cluster's.
    local p
    for p in $(pgrep -x slurmstepd || true); do
        if tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF "SLURM_CONF=$CONF"; then
            log "killing leftover slurmstepd (pid $p)"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    log "stopped the cluster in $DIR"
}

do_status() {
    local name pidfile pid rc=0
    for name in munged slurmctld slurmd; do
        pidfile=$DIR/run/$name.pid
        if pid=$(our_pid "$pidfile"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            rc=1
        fi
    done
    [[ -f $CONF ]] || { echo "no $CONF"; return 1; }
    echo "export SLURM_CONF=$CONF"
    our_pid "$CTLD_PID" >/dev/null || return 1
    SLURM_CONF=$CONF timeout 10 sinfo || rc=1
    SLURM_CONF=$CONF timeout 10 squeue || rc=1
    return $rc
}

# ---------------------------------------------------------------------------- start

do_start() {
    local t0 cpus mem_kb mem_mb defmem ctld_port slurmd_port overrides="" i state
    t0=$(date +%s.%N)
    [[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as SlurmUser=root)"
    install_if_missing

    # Already up for this DIR (all three daemons alive and the node answering): reuse it.
    if our_pid "$MUNGED_PID" >/dev/null && our_pid "$CTLD_PID" >/dev/null &&
        our_pid "$SLURMD_PID" >/dev/null &&
        [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]; then
        log "already running in $DIR"
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    # Partly up (a crash, an interrupted start): clear it and start afresh.
    if our_pid "$MUNGED_PID" >/dev/null || our_pid "$CTLD_PID" >/dev/null ||
        our_pid "$SLURMD_PID" >/dev/null; then
        log "a part of the cluster in $DIR runs: stopping it first"
        do_stop
    fi

    # Unix socket paths are limited to 107 bytes (sun_path); slurmd's step sockets are
    # SPOOL/HOST_JOBID.STEPID, so leave room for those.
    ((${#MUNGE_SOCKET} + 6 < 108)) || die "DIR is too long for munge's socket path: $MUNGE_SOCKET"
    ((${#DIR} + ${#HOST} + 34 < 108)) || die "DIR is too long for slurmd's step sockets: $DIR"

    # munged refuses folders on the key/socket/log paths that others may write, and wants
    # the socket's folders searchable (o+x) by all; nobody else may list or write them.
    chmod 0711 "$DIR"
    mkdir -p "$MUNGE_DIR" "$DIR"/{state,spool,log,run}
    chmod 0711 "$MUNGE_DIR"
    chmod 0700 "$DIR"/{state,spool,log,run}

    # A key of our own: the cluster needs no shared /etc/munge/munge.key.
    if [[ ! -s $MUNGE_DIR/munge.key ]]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_DIR/munge.key" >&2
        else
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chmod 0400 "$MUNGE_DIR/munge.key"

    # Node size: what the machine has, memory a bit under so slurmd never reports less than
    # configured (which would drain the node).
    cpus=${LOCAL_SLURM_CPUS:-$(nproc)}
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$((mem_kb / 1024 * 95 / 100))
    # Without a default, a job that asks for no memory is given the whole node's, and jobs then
    # run one at a time.
    defmem=$((mem_mb / cpus < 1024 ? mem_mb / cpus : 1024))
    # Declaring more CPUs than the machine has needs config_overrides, or the node is drained.
    if ((cpus != $(nproc))); then overrides="SlurmdParameters=config_overrides"; fi

    # Fresh ports on every start: a second cluster or a leftover one cannot collide.
    ctld_port=$(free_port)
    slurmd_port=$(free_port "$ctld_port")

    cat >"$CONF" <<EOF
# Written by $PROG start $DIR; rewritten on every start.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root

# Our own munged (socket under DIR); cred_expire is also how long a requeued job waits
# before it may start again (default 120 s).
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10

StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups (containers and CI runners rarely delegate them): track a job's processes by
# parentage. (proctrack/pgid would also end the background children that a batch script leaves
# behind when it exits, but makes every cancel/requeue ~3.5 s slower.) No task binding, no
# accounting database.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$defmem
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# Schedule a submitted batch job at once (default: up to 3 s later), and look at pending jobs
# every 2 s instead of 60 s, so that a requeued job starts soon after cred_expire.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=5
$overrides

# Test-friendly timings: finished jobs stay visible to squeue for MinJobAge seconds,
# batch jobs may be requeued, signals are followed by SIGKILL after KillWait seconds.
MaxArraySize=1001
MinJobAge=300
JobRequeue=1
KillWait=5
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
Waittime=0

NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    log "wrote $CONF (node $HOST: $cpus CPUs, ${mem_mb} MB; ports slurmctld $ctld_port, slurmd $slurmd_port)"

    # Daemons: detached (setsid), and their stdio away from our stdout, so that $(...) around
    # this script does not wait for them to close it.
    export SLURM_CONF=$CONF
    # --force: munged wants every folder above its socket searchable by all users (pytest's
    # tmp folders are 0700); only root talks to this munged, so a warning is enough.
    log "starting munged"
    setsid munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
        --pid-file="$MUNGED_PID" --log-file="$DIR/log/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$DIR/log/munged.out" 2>&1 ||
        { print_logs; die "munged failed to start"; }
    for ((i = 0; i < 100; i++)); do
        munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && break
        sleep 0.1
    done
    ((i < 100)) || { print_logs; do_stop; die "munged does not answer on $MUNGE_SOCKET"; }

    log "starting slurmctld"
    setsid slurmctld -f "$CONF" </dev/null >>"$DIR/log/slurmctld.out" 2>&1 ||
        { print_logs; do_stop; die "slurmctld failed to start"; }
    log "starting slurmd"
    setsid slurmd -f "$CONF" </dev/null >>"$DIR/log/slurmd.out" 2>&1 ||
        { print_logs; do_stop; die "slurmd failed to start"; }

    # Idle means slurmd registered and the node takes jobs.
    state=""
    while :; do
        state=$(node_state)
        [[ $state == idle ]] && break
        if (($(date +%s) - ${t0%.*} >= TIMEOUT)); then
            log "node $HOST is not idle after $TIMEOUT s (state: '${state:-no answer}'); logs:"
            print_logs
            do_stop
            exit 1
        fi
        sleep 0.5
    done
    log "node $HOST idle after $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
    echo "export SLURM_CONF=$CONF"
}

case $CMD in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
esac
