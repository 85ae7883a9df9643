#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, built from Debian's packages, for tests and CI.
#
#   tests/slurm/cluster.sh start <state-dir>   # install if needed, configure, start, wait for an idle node
#   tests/slurm/cluster.sh stop  <state-dir>   # cancel jobs, stop the daemons started here (by pid); idempotent
#
# After `start`, point the Slurm clients (sbatch, squeue, scontrol, ...) at the cluster with:
#   export SLURM_CONF=<state-dir>/slurm.conf
#
# Needs root (CI runs as root). No systemd and no cgroups: munged, slurmctld and slurmd all
# run as root, daemonised, with every pid file, socket, log and spool under <state-dir>.
# Node "localhost" (127.0.0.1), partition "debug"; ports are Slurm's defaults (6817/6818),
# so only one such cluster can run on a machine at a time.
# Without slurmdbd, `sacct` does not work (accounting storage is disabled); finished jobs stay
# visible to `scontrol show job` / `squeue` for MinJobAge seconds, and are logged, one line
# each, to <state-dir>/log/jobcomp.txt.
set -euo pipefail

usage() { echo "usage: $0 start|stop <state-dir>" >&2; exit 2; }
[[ $# -eq 2 && ( $1 == start || $1 == stop ) ]] || usage
action=$1
[[ $action == stop && ! -d $2 ]] && exit 0          # nothing was ever started there
mkdir -p "$2"
state=$(cd "$2" && pwd)                              # absolute: slurm.conf needs absolute paths
conf=$state/slurm.conf
export SLURM_CONF=$conf
NODE=localhost

log() { echo "cluster.sh: $*" >&2; }
dump_logs() {
  local f
  for f in "$state"/log/*.log; do
    [[ -f $f ]] && { echo "===== $f (last 40 lines)" >&2; tail -n 40 "$f" >&2; }
  done
  return 0
}
die() {    # on a failed start, also stop whatever this run did start
  log "error: $*"; dump_logs
  [[ $action == start ]] && stop_daemons slurmd slurmctld munged
  exit 1
}

# SIGTERM each daemon whose pid is in run/<name>.pid, if that pid is still that program, then
# wait for all of them together (each takes ~2 s to exit); SIGKILL whatever is left after 10 s.
stop_daemons() {
  local name file pid pids=()
  for name in "$@"; do
    file=$state/run/$name.pid
    [[ -s $file ]] && pid=$(<"$file") && [[ $pid =~ ^[0-9]+$ ]] &&
      [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] &&
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    rm -f "$file"
  done
  (( ${#pids[@]} )) || return 0
  for _ in $(seq 50); do
    kill -0 "${pids[@]}" 2>/dev/null || break      # fails only when every one of them is gone
    sleep 0.2
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

stop() {
  # Cancel what is left and wait for the node to be idle again, so that no job's slurmstepd
  # outlives slurmd. Skipped if the controller is already gone.
  local pidf=$state/run/slurmctld.pid jobs=()
  if [[ -s $pidf ]] && kill -0 "$(<"$pidf")" 2>/dev/null; then
    mapfile -t jobs < <(timeout 10 squeue -h -o %A 2>/dev/null | sort -u)
    if (( ${#jobs[@]} )); then
      timeout 10 scancel "${jobs[@]}" 2>/dev/null || true
      for _ in $(seq 40); do
        [[ $(timeout 5 sinfo -h -n "$NODE" -o %t 2>/dev/null) == idle ]] && break
        sleep 0.25
      done
    fi
  fi
  stop_daemons slurmd slurmctld munged
}

install_packages() {
  command -v munged >/dev/null && command -v slurmctld >/dev/null &&
    command -v slurmd >/dev/null && command -v sbatch >/dev/null && return 0
  local pkgs=(munge slurmctld slurmd slurm-client) apt=$state/log/apt.log rc=0 policy=
  # Keep the packages' init scripts from starting daemons of their own (Docker images already
  # have such a policy-rc.d; a plain machine may not).
  [[ -e /usr/sbin/policy-rc.d ]] || { policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${pkgs[@]}" >"$apt" 2>&1 ||
    { apt-get update >>"$apt" 2>&1 && apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$apt" 2>&1; } ||
    rc=$?
  [[ -z $policy ]] || rm -f "$policy"
  (( rc == 0 )) || die "apt-get install ${pkgs[*]} failed (see apt.log above)"
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)   # MiB, a bit below real
  cat >"$conf" <<EOF
# Written by tests/slurm/cluster.sh: a one-node test cluster; no accounting, no cgroups.
ClusterName=ablate-ci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  stop                                               # a clean slate if a previous run was left up
  mkdir -p "$state"/{munge,ctld,spool,run,log}
  rm -f "$state"/log/*.log                           # so that a failure dumps this run's logs only
  install_packages
  local t0=$SECONDS state_now='' port name
  # Slurm's ports must be free: otherwise the clients would happily talk to someone else's cluster.
  for port in 6817 6818; do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
      die "port $port is in use (another Slurm cluster running? stop it first)"
  done
  # munge: a key if the packages did not make one, then munged as root (--force: it would
  # otherwise refuse a socket under a directory that is not world-searchable, e.g. mktemp -d).
  if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
  fi
  munged --force --socket="$state/munge/munge.socket" --pid-file="$state/run/munged.pid" \
    --log-file="$state/log/munged.log" --seed-file="$state/munge/munged.seed" ||
    die "munged failed to start"
  write_conf
  slurmctld || die "slurmctld failed to start"
  slurmd -N "$NODE" || die "slurmd failed to start"
  # Wait for the node to register and turn idle; resume it if it comes up down or drained.
  while (( SECONDS - t0 < 60 )); do
    state_now=$(timeout 10 sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1) || true
    case $state_now in
      idle) for name in munged slurmctld slurmd; do
              kill -0 "$(cat "$state/run/$name.pid" 2>/dev/null)" 2>/dev/null || die "$name is not running"
            done
            log "$(slurmctld -V) is up; export SLURM_CONF=$conf"
            return 0 ;;
      down*|drain*|drng*) timeout 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
  done
  die "node $NODE not idle after 60 s (last state: '${state_now:-none}')"
}

"$action"
