#!/usr/bin/env bash
# A one-node SLURM 22.05 cluster on localhost, to try profiles/slurm-local (and to test the
# SLURM path in CI): munge, MariaDB + slurmdbd (accounting, so that `sacct` and `--account`
# behave as on a real cluster), slurmctld, slurmd, two partitions (cpu, gpu) on the same node
# and 4 fake GPUs (gres type "fake": scheduling only, torch sees no CUDA and trains on CPU/gloo).
#
#   sudo bash scripts/slurm-local-cluster.sh start    # installs the packages (apt) if needed
#   sudo bash scripts/slurm-local-cluster.sh stop     # stops only the daemons `start` started
#   bash scripts/slurm-local-cluster.sh status
#
# Needs root (the daemons run as root, munged as user munge) and apt. Everything lives in
# $MINIALBERT_SLURM_DIR (default /var/tmp/minialbert-slurm), except one symlink,
# /etc/slurm/slurm.conf -> $MINIALBERT_SLURM_DIR/etc/slurm.conf: the client commands inside a
# job (the plugin's srun) do not inherit SLURM_CONF, they read /etc/slurm/slurm.conf as on a real
# cluster. `start` refuses to replace an existing /etc/slurm/slurm.conf; `stop` removes the link.
# Ports (localhost only): slurmctld 16817, slurmd 16818, slurmdbd 16819, MariaDB 13306.
# `start` is idempotent: a daemon whose recorded pid is alive is left alone; `stop` signals only
# pids recorded by `start` (a munged that was already running is used and never stopped).
set -euo pipefail

DIR=${MINIALBERT_SLURM_DIR:-/var/tmp/minialbert-slurm}
HOST=$(hostname -s)
CLUSTER=minialbert
ACCOUNT=minialbert           # profiles/slurm-local uses this account
NGPUS=4
CTLD_PORT=16817 SLURMD_PORT=16818 DBD_PORT=16819 DB_PORT=13306
export SLURM_CONF="$DIR/etc/slurm.conf"

log() { echo "[slurm-local] $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_alive() {  # name -> 0 if the pid recorded for it runs the expected program
    local f="$DIR/pids/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -d "/proc/$pid" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2"
}

launch() {  # name, program pattern, command...: start in the background, record the pid
    local name=$1 pattern=$2
    shift 2
    if pid_alive "$name" "$pattern"; then
        log "$name already running (pid $(cat "$DIR/pids/$name.pid"))"
        return 0
    fi
    setsid "$@" >>"$DIR/log/$name.out" 2>&1 </dev/null &
    echo $! >"$DIR/pids/$name.pid"
    log "started $name (pid $!)"
}

wait_for() {  # seconds, description, command...
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    die "$what did not come up within ${secs}s (logs: $DIR/log/)"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v munged >/dev/null || missing+=(munge)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # policy-rc.d 101: the packages' postinst must not start system-wide daemons
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
    [ $created_policy = 1 ] && rm -f "$policy"
    return 0
}

write_configs() {
    local cpus mem
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    [ "$mem" -gt 20000 ] && mem=20000
    mkdir -p "$DIR"/{etc,pids,log,run,state,spool,dev}
    for i in $(seq 0 $((NGPUS - 1))); do
        # fake GPUs must be character devices: a clone of /dev/null (major 1, minor 3)
        [ -c "$DIR/dev/nvidia$i" ] || mknod "$DIR/dev/nvidia$i" c 1 3
    done
    cat >"$DIR/etc/slurm.conf" <<EOF
# written by scripts/slurm-local-cluster.sh
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroup delegation in containers: track processes by parentage, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
JobRequeue=1
ReturnToService=2
# finished jobs stay visible to squeue for 5 min, as on most clusters (the plugin needs
# MinJobAge >= 3 x its first status interval to use squeue)
MinJobAge=300
KillWait=10
InactiveLimit=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem Gres=gpu:fake:$NGPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu Type=fake File=$DIR/dev/nvidia[0-$((NGPUS - 1))]
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    mkdir -p /etc/slurm
    if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
        :
    elif [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
        die "/etc/slurm/slurm.conf exists and is not ours: this machine has a SLURM config already"
    else
        ln -s "$SLURM_CONF" /etc/slurm/slurm.conf
    fi
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running (not started here, will not be stopped)"
        return 0
    fi
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    launch munged munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for 15 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
    local sock="$DIR/run/mysql.sock"
    if [ ! -d "$DIR/mysql/mysql" ]; then
        log "initialising MariaDB in $DIR/mysql"
        mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=socket \
            --skip-test-db >>"$DIR/log/mariadb-install.out" 2>&1
    fi
    launch mariadbd mariadbd /usr/sbin/mariadbd --no-defaults --datadir="$DIR/mysql" --socket="$sock" \
        --port=$DB_PORT --bind-address=127.0.0.1 --user=root --pid-file="$DIR/run/mariadbd.pid" \
        --skip-log-bin --innodb-buffer-pool-size=64M
    wait_for 60 MariaDB mariadb --no-defaults -S "$sock" -u root -e "SELECT 1"
    mariadb --no-defaults -S "$sock" -u root -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

setup_accounts() {
    sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || die "sacctmgr could not add cluster $CLUSTER"
    if ! sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT"; then
        sacctmgr -i -Q add account "$ACCOUNT" cluster="$CLUSTER" description="minialbert local tests" >/dev/null
    fi
    if ! sacctmgr -n -P list assoc user=root format=account | grep -qx "$ACCOUNT"; then
        sacctmgr -i -Q add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    fi
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die "start needs root (the daemons run as root, munged as munge)"
    install_packages
    write_configs
    start_munge
    start_mariadb
    launch slurmdbd slurmdbd /usr/sbin/slurmdbd -D
    wait_for 60 slurmdbd sacctmgr -n list cluster
    setup_accounts
    launch slurmctld slurmctld /usr/sbin/slurmctld -D -i
    wait_for 60 slurmctld scontrol ping
    launch slurmd slurmd /usr/sbin/slurmd -D
    # a failed earlier registration may have left the node DOWN/DRAINED
    for _ in $(seq 60); do
        state=$(sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1)
        case "$state" in
            idle|mixed|allocated) break ;;
            down*|drain*|fail*|inval*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    case "$state" in idle|mixed|allocated) ;; *) die "node $HOST is '$state', not idle (logs: $DIR/log/)" ;; esac
    log "cluster '$CLUSTER' up: node $HOST ($(nproc) CPUs, gpu:fake:$NGPUS), partitions cpu (default) and gpu, account $ACCOUNT"
}

stop_one() {  # name pattern
    local f="$DIR/pids/$1.pid" pid
    if ! pid_alive "$1" "$2"; then rm -f "$f"; return 0; fi
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 40); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null
    rm -f "$f"
    log "stopped $1 (pid $pid)"
}

cmd_stop() {
    if pid_alive slurmctld slurmctld; then
        # jobs of this cluster only (it is ours); their steps die with their slurmstepd
        scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 30); do [ -z "$(squeue -h -t running,completing 2>/dev/null)" ] && break; sleep 1; done
    fi
    stop_one slurmd slurmd
    stop_one slurmctld slurmctld
    stop_one slurmdbd slurmdbd
    stop_one mariadbd mariadbd
    stop_one munged munged   # only if start started it
    if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_CONF" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
}

cmd_status() {
    for name in munged:munged mariadbd:mariadbd slurmdbd:slurmdbd slurmctld:slurmctld slurmd:slurmd; do
        if pid_alive "${name%%:*}" "${name##*:}"; then echo "${name%%:*}: running (pid $(cat "$DIR/pids/${name%%:*}.pid"))"
        else echo "${name%%:*}: not started here"; fi
    done
    pid_alive slurmctld slurmctld && sinfo
    return 0
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
