#!/usr/bin/env bash
# A single-node SLURM cluster on this machine: munge, slurmctld and slurmd on localhost.
#
#   bash scripts/slurm_cluster.sh up       # install what is missing, configure, start, wait until idle
#   bash scripts/slurm_cluster.sh status   # the daemons' state and sinfo
#   bash scripts/slurm_cluster.sh down     # stop the daemons (the state folder is kept)
#   bash scripts/slurm_cluster.sh env      # the line to eval for clients: export SLURM_CONF=...
#
# Everything it writes (slurm.conf, munge key and socket, logs, spool, state) lies under
# $MMVI_SLURM_DIR (default /tmp/mmvi-slurm); clients find the cluster with
# SLURM_CONF=$MMVI_SLURM_DIR/slurm.conf. Idempotent: `up` on a running cluster only checks it.
# Settings: MMVI_SLURM_CPUS (2), MMVI_SLURM_PORT (6817; slurmd uses the next port),
# MMVI_SLURM_PARTITION (debug). Needs root (apt-get, daemons running as root).
# A daemon that cannot start: one line naming it and the last line of its own log, exit 1.
set -uo pipefail

DIR=${MMVI_SLURM_DIR:-/tmp/mmvi-slurm}
CPUS=${MMVI_SLURM_CPUS:-2}
PORT=${MMVI_SLURM_PORT:-6817}
PARTITION=${MMVI_SLURM_PARTITION:-debug}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf
SOCKET=$DIR/munge/munge.socket.2
export SLURM_CONF=$CONF
WAIT_S=${MMVI_SLURM_WAIT_S:-60}
CHANGED=0

die() {
    echo "slurm_cluster: $*" >&2
    exit 1
}

# the last non-empty line of a daemon's log, for the one-line error
last_log_line() {
    if [[ -s $1 ]]; then
        grep -v '^[[:space:]]*$' "$1" | tail -1
    else
        echo "(no log at $1)"
    fi
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_missing() {
    local need=()
    command -v munged >/dev/null || need+=(munge)
    { command -v slurmctld && command -v slurmd && command -v sinfo; } >/dev/null || need+=(slurm-wlm)
    ((${#need[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "apt-get: installing ${need[*]} needs root"
    echo "slurm_cluster: installing ${need[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
        >"$DIR/apt.log" 2>&1 || die "apt-get: $(last_log_line "$DIR/apt.log")"
}

write_config() {
    mkdir -p "$DIR"/{munge,log,spool/slurmd,state,run}
    chmod 700 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        (umask 077 && head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
    fi
    chmod 400 "$DIR/munge/munge.key"
    local mem_mb
    mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
    cat >"$CONF.new" <<EOF
# written by scripts/slurm_cluster.sh: one node (this machine), controller and slurmd on localhost
ClusterName=mmvi
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=2
SlurmdTimeout=60
InactiveLimit=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; else mv "$CONF.new" "$CONF" && CHANGED=1; fi
}

start_munge() {
    if pid_alive "$DIR/run/munged.pid" && munge -n -S "$SOCKET" </dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1; then
        return 0
    fi
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" >>"$DIR/log/munged.log" 2>&1 ||
        die "munged did not start: $(last_log_line "$DIR/log/munged.log")"
    for _ in $(seq 50); do
        munge -n -S "$SOCKET" </dev/null 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer on $SOCKET: $(last_log_line "$DIR/log/munged.log")"
}

# listens PID PORT: the process PID holds the socket listening on TCP PORT
listens() {
    local hex inode
    hex=$(printf '%04X' "$2")
    for inode in $(awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" {print $10}' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
        ls -l "/proc/$1/fd" 2>/dev/null | grep -q "socket:\[$inode\]" && return 0
    done
    return 1
}

# start_daemon NAME PORT BINARY ARGS...: start it unless its pid file names a live process; it has
# started when it listens on PORT; it has failed when it exits first (or after 30 s)
start_daemon() {
    local name=$1 port=$2 i pid
    shift 2
    pid_alive "$DIR/run/$name.pid" && return 0
    rm -f "$DIR/run/$name.pid"
    "$@" >>"$DIR/log/$name.out" 2>&1 || true
    for ((i = 0; i < 300; i++)); do
        if [[ -s $DIR/run/$name.pid ]]; then
            pid=$(cat "$DIR/run/$name.pid")
            kill -0 "$pid" 2>/dev/null || break
            listens "$pid" "$port" && return 0
        fi
        sleep 0.1
    done
    local line
    line=$(last_log_line "$DIR/log/$name.log")
    [[ -s $DIR/log/$name.log ]] || line=$(last_log_line "$DIR/log/$name.out")
    die "$name did not start: $line"
}

node_state() { sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1; }

up() {
    mkdir -p "$DIR" || die "cannot create $DIR"
    install_missing
    write_config
    start_munge
    local running=0
    pid_alive "$DIR/run/slurmctld.pid" && running=1
    start_daemon slurmctld "$PORT" slurmctld -f "$CONF"
    start_daemon slurmd "$((PORT + 1))" slurmd -f "$CONF" -N "$NODE"
    if ((running && CHANGED)); then # a running cluster takes the rewritten config
        scontrol reconfigure >/dev/null 2>&1 || die "scontrol reconfigure: $(last_log_line "$DIR/log/slurmctld.log")"
    fi
    local state="" i
    for ((i = 0; i < WAIT_S * 2; i++)); do
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing) break ;;
        drain* | down*)
            scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    case $state in
    idle | mixed | allocated | completing) ;;
    *)
        local why
        why=$(scontrol show node "$NODE" 2>/dev/null | grep -o 'Reason=.*' | head -1)
        pid_alive "$DIR/run/slurmctld.pid" || die "slurmctld stopped: $(last_log_line "$DIR/log/slurmctld.log")"
        pid_alive "$DIR/run/slurmd.pid" || die "slurmd stopped: $(last_log_line "$DIR/log/slurmd.log")"
        die "node $NODE is '${state:-unknown}' after ${WAIT_S}s ${why}; slurmd: $(last_log_line "$DIR/log/slurmd.log")"
        ;;
    esac
    echo "slurm_cluster: up: node $NODE $state, partition $PARTITION, $CPUS CPUs; clients: export SLURM_CONF=$CONF"
}

stop_pid() {
    local file=$1
    pid_alive "$file" || { rm -f "$file"; return 0; }
    local pid
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    rm -f "$file"
}

down() {
    [[ -d $DIR ]] || { echo "slurm_cluster: down (nothing at $DIR)"; return 0; }
    if pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --full --quiet --user="$(id -un)" >/dev/null 2>&1 || true
    fi
    stop_pid "$DIR/run/slurmd.pid"
    stop_pid "$DIR/run/slurmctld.pid"
    stop_pid "$DIR/run/munged.pid"
    echo "slurm_cluster: down (state kept in $DIR)"
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$DIR/run/$name.pid"; then
            echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
        else
            echo "$name: stopped"
            rc=3
        fi
    done
    ((rc)) || sinfo
    return $rc
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
    echo "usage: $0 up|down|status|env" >&2
    exit 2
    ;;
esac
