#!/usr/bin/env bash
# Stop the single-node Slurm cluster that tests/slurm/local_cluster.sh started: its daemons, by their
# PID files, in the reverse order of starting. Jobs still queued or running are cancelled first.
#   --purge   also forget the cluster's saved state (queued jobs, node states), for a clean start
set -uo pipefail

MARK="# Written by magflow tests/slurm/local_cluster.sh; stop with tests/slurm/stop_cluster.sh."
say() { echo "stop_cluster: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "needs root"; exit 2; }
if [ ! -f /etc/slurm/slurm.conf ] || ! grep -qxF "$MARK" /etc/slurm/slurm.conf; then
    say "no cluster set up by local_cluster.sh here; nothing to stop"
    exit 0
fi

# The cluster is this test's own: every job on it is cancelled.
squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null

for pid_file in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid \
                /run/munge/munged.pid; do
    [ -s "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    kill -0 "$pid" 2>/dev/null || continue
    kill "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$pid_file ($pid) did not stop in 20 s; killing it"
        kill -9 "$pid"
    fi
    say "stopped $(basename "$pid_file" .pid) ($pid)"
done

if [ "${1:-}" = "--purge" ]; then
    rm -rf /var/lib/slurm/slurmctld/* /var/lib/slurm/slurmd/*
    say "cleared the saved Slurm state"
fi
