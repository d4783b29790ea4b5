#!/usr/bin/env bash
# A single-node Slurm cluster (munge, slurmctld, slurmd, slurmdbd + MariaDB for accounting) and a
# PostgreSQL server for Optuna, from Debian packages, started by hand (no systemd needed), all state
# under $BASE. For tests and CI on one machine; see slurm/README.md for a real cluster.
#
#   bash slurm/test-cluster.sh install   # apt packages (root)
#   bash slurm/test-cluster.sh up        # start everything, write $BASE/env.sh
#   bash slurm/test-cluster.sh smoke     # a 4-task array and a PostgreSQL query
#   bash slurm/test-cluster.sh down      # stop everything
#   source $BASE/env.sh                  # SLURM_CONF and PIPELINE_TEST_PG_URL for tests
set -Eeuo pipefail

BASE=${BASE:-/tmp/pipeline-test-cluster}
PG_PORT=${PG_PORT:-5433}
MARIADB_PORT=${MARIADB_PORT:-3307}
export USER=${USER:-$(id -un)}
export SLURM_CONF=$BASE/slurm/slurm.conf
PG_URL="postgresql+psycopg2://optuna:optunapw@127.0.0.1:$PG_PORT/optuna"

say() { echo "[test-cluster $(date +%T)] $*"; }

# wait_until SECONDS WHAT CMD...: poll CMD every 0.2 s
wait_until() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      say "gave up waiting for $what after ${limit}s; logs in $BASE/log"
      return 1
    fi
    sleep 0.2
  done
}

running() { [[ -f $BASE/pids/$1 ]] && kill -0 "$(cat "$BASE/pids/$1")" 2>/dev/null; }

# start NAME CMD...: run a daemon in the foreground mode in the background, output to a log file
# (never to our stdout, so nothing holds CI's pipe open), pid recorded for `down`
start() {
  local name=$1; shift
  "$@" >"$BASE/log/$name.out" 2>&1 &
  echo $! >"$BASE/pids/$name"
}

stop() {
  local f=$BASE/pids/$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && { say "$1 did not stop, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$f"
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1; }
as_user() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups "$@"; }

install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client slurmdbd munge mariadb-server postgresql >/dev/null
  # the package's version, not `sinfo --version`: with no slurm.conf yet, sinfo retries for 60 s first
  say "installed: slurm $(dpkg-query -W -f='${Version}' slurm-client), $(munged --version 2>&1 | head -1)," \
      "$("$(pg_bin)/postgres" --version)"
}

up_munge() {
  mkdir -p /etc/munge /run/munge "$BASE/munge"
  [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  chown -R munge:munge /etc/munge /run/munge "$BASE/munge"
  chmod 0700 /etc/munge; chmod 0600 /etc/munge/munge.key; chmod 0755 /run/munge
  start munged as_user munge /usr/sbin/munged -F --socket=/run/munge/munge.socket.2 \
    --log-file="$BASE/munge/munged.log" --pid-file="$BASE/munge/munged.pid" --seed-file="$BASE/munge/seed"
  wait_until 15 munged bash -c 'munge -n | unmunge'
}

# Accounting is not optional: without it sacct fails and submitit cannot tell that a job ended.
up_accounting() {
  local sock=$BASE/mysql/mysqld.sock
  chown mysql:mysql "$BASE/mysql"
  [[ -d $BASE/mysql/data/mysql ]] || mariadb-install-db --user=mysql --datadir="$BASE/mysql/data" \
      --auth-root-authentication-method=socket --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  start mariadbd mariadbd --no-defaults --user=mysql --datadir="$BASE/mysql/data" --socket="$sock" \
    --port="$MARIADB_PORT" --bind-address=127.0.0.1 --pid-file="$BASE/mysql/mariadbd.pid" \
    --log-error="$BASE/log/mariadb.log" --innodb-buffer-pool-size=256M
  wait_until 60 mariadb mariadb-admin --socket="$sock" ping
  mariadb --socket="$sock" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat >"$BASE/slurm/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$(hostname -s)
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MARIADB_PORT
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$BASE/slurm/slurmdbd.conf"  # slurmdbd refuses a readable one
  start slurmdbd slurmdbd -D               # reads slurmdbd.conf beside $SLURM_CONF
  wait_until 60 slurmdbd bash -c 'exec 3<>/dev/tcp/127.0.0.1/6819'
}

up_slurm() {
  local host mem
  host=$(hostname -s)
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  # CR_Core (not CR_Core_Memory): otherwise each job takes the node's memory and jobs queue up.
  # Fast scheduling and cred_expire=10 keep array waves and requeues quick in tests.
  cat >"$SLURM_CONF" <<EOF
ClusterName=pipeline-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$BASE/slurm/state
SlurmdSpoolDir=$BASE/slurm/spool
SlurmctldPidFile=$BASE/slurm/slurmctld.pid
SlurmdPidFile=$BASE/slurm/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobCompType=jobcomp/none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  start slurmctld slurmctld -D
  wait_until 60 slurmctld scontrol ping
  start slurmd slurmd -D
  wait_until 60 "an idle node" bash -c '[[ $(sinfo -h -o %t) == idle ]]'
}

up_postgres() {
  local bin; bin=$(pg_bin)
  chown postgres:postgres "$BASE/pg"
  [[ -f $BASE/pg/data/PG_VERSION ]] || as_user postgres "$bin/initdb" -D "$BASE/pg/data" -U postgres \
      --auth=trust -E UTF8 --locale=C.UTF-8 >"$BASE/log/initdb.log" 2>&1
  as_user postgres "$bin/pg_ctl" -D "$BASE/pg/data" -l "$BASE/pg/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $BASE/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off" \
    start >/dev/null
  local psql=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt)
  "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='optuna'" | grep -q 1 ||
    "${psql[@]}" -c "CREATE USER optuna PASSWORD 'optunapw'" -c "CREATE DATABASE optuna OWNER optuna"
  # CREATEDB: each test process makes its own database (tests/conftest.py), so that test processes that run
  # beside each other (pytest-xdist workers, the floors job) never empty one another's
  "${psql[@]}" -c "ALTER ROLE optuna CREATEDB"
}

show_logs() {
  say "failed; the end of each log in $BASE/log:"
  tail -n 15 "$BASE"/log/* "$BASE"/pg/*.log 2>/dev/null || true
}

up() {
  mkdir -p "$BASE"/{pids,log,slurm/state,slurm/spool,munge,mysql,pg}
  chmod 755 "$BASE"  # munge, mysql and postgres must reach their folders (mktemp -d makes it 700)
  trap show_logs ERR
  if ! running munged; then up_munge; fi
  say "munge up"
  if ! running slurmdbd; then up_accounting; fi
  say "accounting up (slurmdbd + MariaDB)"
  if ! running slurmctld; then up_slurm; fi
  say "slurm up: $(sinfo -h -o '%P %a %D %t %N')"
  if [[ ! -f $BASE/pg/data/postmaster.pid ]]; then up_postgres; fi
  say "postgres up on port $PG_PORT"
  cat >"$BASE/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
export PIPELINE_TEST_PG_URL=$PG_URL
EOF
  say "ready: source $BASE/env.sh"
}

smoke() {
  local jid
  jid=$(sbatch --parsable -o "$BASE/log/smoke_%A_%a.out" --array=0-3 --wrap 'echo array task $SLURM_ARRAY_TASK_ID')
  wait_until 60 "array $jid" bash -c "[[ -z \$(squeue -h -j $jid) ]]"
  cat "$BASE"/log/smoke_"$jid"_*.out
  sleep 1
  sacct -j "$jid" -X -o JobID,State --parsable2
  psql -h 127.0.0.1 -p "$PG_PORT" -U optuna -d optuna -Atc 'select version()'
}

down() {
  stop slurmd
  stop slurmctld
  stop slurmdbd
  stop mariadbd
  if [[ -f $BASE/pg/data/postmaster.pid ]]; then
    as_user postgres "$(pg_bin)/pg_ctl" -D "$BASE/pg/data" -m fast -w stop >/dev/null || true
  fi
  stop munged
  say "stopped"
}

case ${1:-} in
  install | up | smoke | down) "$1" ;;
  *) echo "usage: $0 install|up|smoke|down" >&2; exit 2 ;;
esac
