#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from scratch, for trying rnnlab's cluster path
# (hydra/launcher=slurm) on a laptop or in CI. Debian/Ubuntu, as root, no systemd needed.
#
#   scripts/slurm-local.sh up       # install packages if missing, write configs, start daemons
#   scripts/slurm-local.sh status   # sinfo / squeue
#   scripts/slurm-local.sh env      # the line to eval: export SLURM_CONF=...
#   scripts/slurm-local.sh down     # stop the daemons, remove the state dir
#
# Everything (configs, state, spool, logs, the accounting database) lives in one folder,
# $RNNLAB_SLURM_DIR (default /tmp/rnnlab-slurm): nothing under /etc is changed, so it cannot
# disturb a real installation. Commands find the cluster through SLURM_CONF. The daemons
# listen on $RNNLAB_SLURM_PORT (slurmctld, default 6817), +1 (slurmd) and +2 (slurmdbd), so a
# second cluster (a test's) can run beside one that is up already.
#
# Accounting is real: slurmdbd on a private MariaDB (unix socket only, no TCP port). submitit
# asks `sacct` whether a job ended; without accounting a job cancelled or killed from outside
# is never seen as ended. RNNLAB_SLURM_ACCOUNTING=0 leaves it out (faster start-up; then
# only jobs that end by themselves are seen to end).
set -euo pipefail

DIR=${RNNLAB_SLURM_DIR:-/tmp/rnnlab-slurm}
ACCOUNTING=${RNNLAB_SLURM_ACCOUNTING:-1}
PARTITION=${RNNLAB_SLURM_PARTITION:-debug}
PORT=${RNNLAB_SLURM_PORT:-6817}
CLUSTER=rnnlab
HOST=$(hostname)
SBIN=/usr/sbin

say() { echo "slurm-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld slurm-client)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v munged >/dev/null || missing+=(munge)
  if [ "$ACCOUNTING" = 1 ]; then
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  apt-get update -q >/dev/null
  # policy-rc.d: the packages must not start their own daemons (we run ours from $DIR).
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  if [ $own_policy = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2
  shift 2
  for _ in $(seq $((limit * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what did not come up within ${limit}s (logs in $DIR/log)"
}

write_configs() {
  local cpus mem
  cpus=$($SBIN/slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$($SBIN/slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  # Announce a little less memory than slurmd measures: a node that claims more than it has
  # is drained.
  mem=$((mem * 9 / 10))
  mkdir -p "$DIR"/{state,spool,log,run}
  cat >"$DIR/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a one-node cluster inside a container.
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# No cgroups or systemd in a container: track processes by their parent, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# Cores and memory are consumable, so several small jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# Start batch jobs at once (the default waits ~3 s per job).
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
EOF
  if [ "$ACCOUNTING" = 1 ]; then
    cat >>"$DIR/slurm.conf" <<EOF
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=$((PORT + 2))
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$HOST
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
  else
    echo "AccountingStorageType=accounting_storage/none" >>"$DIR/slurm.conf"
  fi
  cat >>"$DIR/slurm.conf" <<EOF
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  # Debian's package made /etc/munge/munge.key; munged runs as the munge user.
  if pgrep -x munged >/dev/null; then return 0; fi
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 0755 /run/munge
  [ -f /etc/munge/munge.key ] || die "no /etc/munge/munge.key (reinstall the munge package)"
  su -s /bin/sh munge -c "$SBIN/munged" || die "munged did not start"
  wait_for 10 munged munge -n
}

start_mariadb() {
  local db=$DIR/mysql
  if [ ! -d "$db/mysql" ]; then
    mariadb-install-db --user=root --datadir="$db" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed (see $DIR/log/mariadb-install.log)"
  fi
  # Unix socket only: the database is not reachable over the network.
  setsid mariadbd --user=root --datadir="$db" --socket="$MYSQL_UNIX_PORT" \
    --skip-networking --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=32M </dev/null >/dev/null 2>&1 &
  wait_for 30 MariaDB mariadb --socket="$MYSQL_UNIX_PORT" -e "select 1"
}

up() {
  need_packages
  if pid_alive "$DIR/run/slurmctld.pid"; then
    say "already up ($DIR)"
    env_line
    return 0
  fi
  write_configs
  export SLURM_CONF=$DIR/slurm.conf
  # The MariaDB client library (slurmdbd's too) connects to "localhost" through this socket.
  export MYSQL_UNIX_PORT=$DIR/run/mysqld.sock
  start_munge
  if [ "$ACCOUNTING" = 1 ]; then
    start_mariadb
    setsid $SBIN/slurmdbd </dev/null >/dev/null 2>&1
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  fi
  # -i: start from a clean state (job ids from 1), the state dir is ours alone.
  setsid $SBIN/slurmctld -i -f "$SLURM_CONF" </dev/null >/dev/null 2>&1
  wait_for 30 slurmctld scontrol ping
  setsid $SBIN/slurmd -f "$SLURM_CONF" </dev/null >/dev/null 2>&1
  wait_for 30 "the node" sh -c "sinfo -h -N -o %T | grep -qx idle"
  say "up: partition $PARTITION, node $HOST ($DIR)"
  env_line
}

down() {
  local pidfile
  # Jobs first: their slurmstepd processes would outlive the daemons.
  if pid_alive "$DIR/run/slurmctld.pid"; then
    export SLURM_CONF=$DIR/slurm.conf
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel --full $jobs 2>/dev/null || true
      for _ in $(seq 100); do
        [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
  fi
  for pidfile in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/slurmdbd.pid" \
    "$DIR/run/mariadb.pid"; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  # Give them a moment to exit, then make sure.
  for _ in $(seq 50); do
    local alive=0
    for pidfile in "$DIR"/run/*.pid; do
      [ -f "$pidfile" ] && pid_alive "$pidfile" && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pidfile in "$DIR"/run/*.pid; do
    [ -f "$pidfile" ] && pid_alive "$pidfile" && kill -9 "$(cat "$pidfile")" 2>/dev/null
  done
  rm -rf "$DIR"
  say "down"
}

status() {
  export SLURM_CONF=$DIR/slurm.conf
  pid_alive "$DIR/run/slurmctld.pid" || { say "not running ($DIR)"; exit 1; }
  sinfo
  squeue
}

env_line() { echo "export SLURM_CONF=$DIR/slurm.conf"; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) env_line ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
