#!/usr/bin/env bash
# A single-node Slurm cluster on this Debian machine, for testing profiles/slurm for real.
#
#   sudo tests/slurm/local_cluster.sh           # install (first time), configure, start; prints sinfo
#   sudo tests/slurm/local_cluster.sh --check   # exit 0 only if the cluster is up and answering
#   sudo tests/slurm/stop_cluster.sh            # stop it again
#
# Needs root and apt-get (Debian 12: Slurm 22.05, munge, MariaDB). No systemd is needed: the daemons
# are started directly. Re-running is idempotent and takes about a second when everything is up; a
# changed configuration restarts the Slurm daemons.
#
# The cluster mirrors the profile's defaults, so profiles/slurm runs on it unchanged:
#   partitions `cpu` (default) and `gpu` on the one node, which advertises fake GPUs (gres backed
#   by /dev/null) so GPU requests (--gpus, --cpus-per-gpu) are accepted and scheduled.
#
# Settings (environment):
#   SLURM_ACCOUNTING=1   slurmdbd + MariaDB, so `sacct` answers: the plugin's default status command.
#                        0 = no accounting; then the profile must poll with squeue (see its README).
#   SLURM_FAKE_GPUS=1    number of fake GPUs on the node (0 = none, and no gpu partition).
#
# Exit status: 0 up; 2 cannot run here (not root, no apt-get, or a foreign slurm.conf); 1 failed.
set -euo pipefail

ACCOUNTING=${SLURM_ACCOUNTING:-1}
FAKE_GPUS=${SLURM_FAKE_GPUS:-1}
CLUSTER=magflow
MARK="# Written by magflow tests/slurm/local_cluster.sh; stop with tests/slurm/stop_cluster.sh."
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
GRES_CONF=/etc/slurm/gres.conf
LOG_DIR=/var/log/slurm

say() { echo "local_cluster: $*" >&2; }
cannot() { say "$*"; exit 2; }
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS COMMAND...: retry every 0.5 s
    local tries=$(($1 * 2)); shift
    for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    return 1
}
stop_daemon() {  # stop_daemon PID_FILE: stop it and wait until it is gone
    running "$1" || return 0
    local pid; pid=$(cat "$1"); kill "$pid"
    wait_for 20 sh -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
}
# Each daemon group remembers the fingerprint of the configuration it was started with, so a changed
# configuration restarts it, even after an earlier run failed between writing and restarting.
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
restart_if_changed() {  # restart_if_changed STAMP CONF... -- PID_FILE...
    local stamp=$1 files=() pid_file; shift
    while [ "$1" != -- ]; do files+=("$1"); shift; done; shift
    if [ "$(cat "$stamp" 2>/dev/null)" != "$(fingerprint "${files[@]}")" ]; then
        for pid_file; do stop_daemon "$pid_file"; done
        fingerprint "${files[@]}" >"$stamp"
    fi
}
node_ready() { sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated|completing)'; }

[ "$(id -u)" = 0 ] || cannot "needs root (it installs packages and starts system daemons)"
if [ -f "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
    cannot "$CONF exists and was not written by this script; refusing to replace a real Slurm setup"
fi

if [ "${1:-}" = "--check" ]; then
    node_ready && { [ "$ACCOUNTING" != 1 ] || sacct -n -X -S now >/dev/null 2>&1; }
    exit
fi

# --- packages ------------------------------------------------------------------------------------
packages="slurmctld slurmd slurm-client munge"
[ "$ACCOUNTING" = 1 ] && packages="$packages slurmdbd mariadb-server"
installed() {  # installed PACKAGE...: all of them are installed
    local package
    for package; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" = installed ] || return 1
    done
}
# shellcheck disable=SC2086  # the package list is split into words on purpose
if ! installed $packages; then
    command -v apt-get >/dev/null || cannot "apt-get not found: install $packages by hand"
    say "installing $packages"
    export DEBIAN_FRONTEND=noninteractive
    # There is no init system to start services: keep the packages' scripts from trying.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq || say "apt-get update failed; trying the cached package lists"
    apt-get install -y -qq --no-install-recommends $packages >/dev/null \
        || cannot "apt-get install $packages failed"
fi

# --- configuration -------------------------------------------------------------------------------
HOST=$(hostname -s)
getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)  # leave 20% to the system

install_file() {  # install_file PATH MODE OWNER < content: write it only when it differs
    local new; new=$(cat)
    [ -f "$1" ] && [ "$new" = "$(cat "$1")" ] || printf '%s\n' "$new" >"$1"
    chmod "$2" "$1"; chown "$3" "$1"
}

install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$LOG_DIR"

gres_node="" gres_types="" gpu_partition=""
if [ "$FAKE_GPUS" -gt 0 ]; then
    gres_types="GresTypes=gpu"
    gres_node="Gres=gpu:$FAKE_GPUS"
    gpu_partition="PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP"
    install_file "$GRES_CONF" 644 root:root <<EOF
$MARK
NodeName=$HOST Name=gpu File=/dev/null Count=$FAKE_GPUS
EOF
else
    rm -f "$GRES_CONF"
fi

if [ "$ACCOUNTING" = 1 ]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu"
else
    accounting="AccountingStorageType=accounting_storage/none"
fi

# MinJobAge: how long slurmctld (and so squeue) still lists a finished job. It must be at least
# 3 x the plugin's init-seconds-before-status-checks for squeue polling to see every job end.
# DefMemPerCPU: without it a job that asks for no memory is given the whole node.
install_file "$CONF" 644 root:root <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=500
MinJobAge=300
KillWait=5
$accounting
JobAcctGatherType=jobacct_gather/linux
$gres_types
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB $gres_node State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
$gpu_partition
EOF

# --- munge: authentication between every Slurm command and daemon --------------------------------
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
wait_for 10 sh -c 'munge -n | unmunge' || { say "munge does not work: see /var/log/munge/munged.log"; exit 1; }

# --- accounting: MariaDB and slurmdbd -------------------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
    install -d -o mysql -g mysql -m 755 /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    if ! mariadb-admin ping >/dev/null 2>&1; then
        setsid /usr/sbin/mariadbd --user=mysql --pid-file=/run/mysqld/mysqld.pid \
            >"$LOG_DIR/mariadbd.log" 2>&1 </dev/null &
        wait_for 30 mariadb-admin ping || { say "MariaDB did not start: see $LOG_DIR/mariadbd.log"; exit 1; }
    fi
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
                GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    # DbdHost must be this machine's short host name, or slurmdbd refuses to start.
    install_file "$DBD_CONF" 600 slurm:slurm <<EOF
$MARK
AuthType=auth/munge
DbdHost=$HOST
DbdPort=6819
SlurmUser=slurm
LogFile=$LOG_DIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    restart_if_changed /run/magflow-slurmdbd.sha256 "$DBD_CONF" -- /run/slurmdbd.pid
    running /run/slurmdbd.pid || /usr/sbin/slurmdbd
    wait_for 30 sacctmgr -n list cluster || { say "slurmdbd did not answer: see $LOG_DIR/slurmdbd.log"; exit 1; }
    # The cluster must be registered before slurmctld starts, or jobs are never accounted.
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
        || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# --- slurmctld and slurmd ------------------------------------------------------------------------
restart_if_changed /run/magflow-slurm.sha256 "$CONF" "$GRES_CONF" -- /run/slurmd.pid /run/slurmctld.pid
running /run/slurmctld.pid || /usr/sbin/slurmctld
wait_for 30 scontrol ping || { say "slurmctld did not start: see $LOG_DIR/slurmctld.log"; exit 1; }
running /run/slurmd.pid || /usr/sbin/slurmd
if ! wait_for 30 node_ready; then
    # A node left down or drained by an earlier run is brought back.
    scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true
    wait_for 15 node_ready || { say "node $HOST is not ready: see $LOG_DIR/slurmd.log"; sinfo -N -l >&2; exit 1; }
fi
if [ "$ACCOUNTING" = 1 ]; then
    wait_for 30 sacct -n -X -S now || { say "sacct does not answer: see $LOG_DIR/slurmdbd.log"; exit 1; }
fi
sinfo
