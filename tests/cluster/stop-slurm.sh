#!/usr/bin/env bash
# Stop the private SLURM cluster started by tests/cluster/start-slurm.sh.
#
# Only the daemons whose PIDs start-slurm.sh recorded in $SLURM_STATE_DIR/run
# (slurmd, slurmctld, munged) are signalled, and only if that PID still
# belongs to a process of that name. Nothing else is touched. Idempotent:
# a cluster that is not running is not an error.
#
#   SLURM_STATE_DIR   state directory [/tmp/structprune-slurm]
#   SLURM_STOP_PURGE  if 1, also delete the state directory afterwards [0]
#   SLURM_DEFAULT_CONF_LINK  as for start-slurm.sh; removed only if it is
#                     still a symlink to this state dir's slurm.conf
set -euo pipefail

STATE_DIR=${SLURM_STATE_DIR:-/tmp/structprune-slurm}
RUN="$STATE_DIR/run"

log() { printf '[stop-slurm] %s\n' "$*" >&2; }

# pid_of NAME PIDFILE -> prints the PID if it is alive and is NAME
pid_of() {
  local name=$1 pidfile=$2 pid
  [ -s "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] \
    && [ "$(cat "/proc/$pid/comm")" = "$name" ] && echo "$pid"
}

# zombies (left when PID 1 does not reap) count as gone
gone() {
  local st
  st=$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 0
  [ -z "$st" ] || [ "$st" = Z ]
}

stop_one() {
  local name=$1 pidfile=$2 pid i
  if ! pid=$(pid_of "$name" "$pidfile"); then
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do        # up to 15 s
    gone "$pid" && break
    sleep 0.1
  done
  if ! gone "$pid"; then
    log "$name (pid $pid) ignored SIGTERM: sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do gone "$pid" && break; sleep 0.1; done
  fi
  rm -f "$pidfile"
}

if [ ! -d "$RUN" ]; then
  log "no state in $STATE_DIR: nothing to stop"
  exit 0
fi

# Cancel jobs still on this cluster first: slurmd does not take its job steps
# (slurmstepd and the job's processes) down with it.
export SLURM_CONF="$STATE_DIR/slurm.conf"
if pid_of slurmctld "$RUN/slurmctld.pid" >/dev/null && [ -f "$SLURM_CONF" ]; then
  jobs=$(timeout 15 squeue -h -o %i -t PD,R,CG,S 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    log "cancelling jobs: $(echo $jobs)"
    # shellcheck disable=SC2086
    timeout 15 scancel $jobs 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do     # up to 20 s (KillWait=5)
      [ -z "$(timeout 15 squeue -h -o %i -t PD,R,CG,S 2>/dev/null || true)" ] && break
      sleep 0.1
    done
  fi
fi

# order matters: slurmd first (it kills its job steps), then the controller,
# munged last (the others talk to it while shutting down)
stop_one slurmd    "$RUN/slurmd.pid"
stop_one slurmctld "$RUN/slurmctld.pid"
stop_one munged    "$RUN/munged.pid"

# the default-config symlink start-slurm.sh made, if it still points at us
link=${SLURM_DEFAULT_CONF_LINK-/etc/slurm/slurm.conf}
if [ -n "$link" ] && [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE_DIR/slurm.conf" ]; then
  rm -f "$link"
fi

if [ "${SLURM_STOP_PURGE:-0}" = 1 ]; then
  rm -rf -- "$STATE_DIR"
  log "removed $STATE_DIR"
fi
log "stopped"
