#!/usr/bin/env bash
# The local stack of the member system: PostgreSQL, MariaDB, Redis A and B, and Apache Kafka (KRaft).
# See docs/local-stack.md. A service already answering on its address is used as it is; the scripts only ever
# stop what they started themselves (recorded in pidfiles under $MEMBER_STACK_DIR/run).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/kafka.sh
source "$SCRIPTS_DIR/kafka.sh"
# shellcheck source=scripts/elasticsearch.sh
source "$SCRIPTS_DIR/elasticsearch.sh"

SELF="$SCRIPTS_DIR/stack.sh"
SERVICES=(postgres mariadb redis-a redis-b kafka "${ES_SERVICES[@]}")

usage() {
  cat <<EOF
usage: scripts/stack.sh COMMAND [SERVICE]

commands:
  up                       install what is missing, start every service that is not answering, wait for all
  down                     stop the services these scripts started (never one that was already running)
  status                   print each service, its address, whether it answers and who started it
  check [SERVICE...]       exit 0 when every named service (default: all) answers, 1 otherwise (quiet)
  start-service SERVICE    start one service if it is not answering (idempotent)
  stop-service SERVICE     stop one service the scripts started; refuses (exit 2) for a service they did not start
  restart-service SERVICE  stop-service, then start-service

services: ${SERVICES[*]}
data, logs and pidfiles: $STACK_DIR (override with MEMBER_STACK_DIR)
EOF
}

# ---------------------------------------------------------------------------------------------------------------
# per-service facts

svc_port() {
  case "$1" in
    postgres) echo "$PG_PORT" ;;
    mariadb) echo "$MARIADB_PORT" ;;
    redis-a) echo "$REDIS_A_PORT" ;;
    redis-b) echo "$REDIS_B_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    search-*) es_http_port "$1" ;;
    *) die "unknown service '$1' (known: ${SERVICES[*]})" ;;
  esac
}

# The string the command line of a process we started contains (guards against pid reuse).
svc_pattern() {
  case "$1" in
    postgres) echo "postgres" ;;
    mariadb) echo "mariadbd" ;;
    redis-a | redis-b) echo "redis-server" ;;
    kafka) echo "kafka.Kafka" ;;
    search-*) es_pattern "$1" ;;
  esac
}

redis_ping() {
  [[ "$(timeout 3 redis-cli -h "$HOST" -p "$1" ping 2>/dev/null)" == "PONG" ]]
}

# svc_answers SERVICE: the service answers on its address (protocol-level where a client is installed).
svc_answers() {
  local port
  port="$(svc_port "$1")"
  case "$1" in
    postgres)
      if command -v pg_isready >/dev/null 2>&1; then
        timeout 5 pg_isready -q -h "$HOST" -p "$port" -t 3
      else
        tcp_open "$port"
      fi
      ;;
    mariadb)
      if command -v mariadb-admin >/dev/null 2>&1; then
        # ping exits 0 when the server runs, even if access is denied.
        timeout 5 mariadb-admin --protocol=tcp -h "$HOST" -P "$port" --connect-timeout=3 ping >/dev/null 2>&1
      else
        tcp_open "$port"
      fi
      ;;
    redis-a | redis-b)
      if command -v redis-cli >/dev/null 2>&1; then
        redis_ping "$port"
      else
        tcp_open "$port"
      fi
      ;;
    kafka) tcp_open "$port" ;;
    search-*) es_answers "$1" ;;
  esac
}

svc_managed_pid() {
  managed_pid "$1" "$(svc_pattern "$1")"
}

# The message for a service that already answers: used as is, whoever started it.
say_running() {
  local svc="$1" pid
  if pid="$(svc_managed_pid "$svc")"; then
    info "$svc: answering on $HOST:$(svc_port "$svc"); already running (started by scripts/stack.sh, pid $pid)"
  else
    info "$svc: answering on $HOST:$(svc_port "$svc"); not started by these scripts, used as is"
  fi
}

# After a successful start: record the process (from this state dir's pidfile) in the machine-wide registry.
# Prints the pid.
register_started() {
  local svc="$1" pid
  pid="$(pid_from_file "$(pidfile_of "$svc")")" || {
    echo "?"
    return 0
  }
  pid_matches "$pid" "$(svc_pattern "$svc")" && register_pid "$svc" "$pid"
  echo "$pid"
}

# ---------------------------------------------------------------------------------------------------------------
# packages: decide everything that is missing first, so apt-get update runs at most once

preinstall() {
  local pkgs=()
  if ! svc_answers postgres && ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
    pkgs+=(postgresql)
  elif ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
    pkgs+=(postgresql-client)
  fi
  if ! svc_answers mariadb && [[ ! -x /usr/sbin/mariadbd ]]; then
    pkgs+=(mariadb-server)
  elif ! command -v mariadb >/dev/null 2>&1 || ! command -v mariadb-admin >/dev/null 2>&1; then
    pkgs+=(mariadb-client)
  fi
  if ! command -v redis-server >/dev/null 2>&1 && { ! svc_answers redis-a || ! svc_answers redis-b; }; then
    pkgs+=(redis-server)
  elif ! command -v redis-cli >/dev/null 2>&1; then
    pkgs+=(redis-tools)
  fi
  if ! svc_answers kafka && [[ ! -f "$KAFKA_HOME/.complete" ]]; then
    command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
  fi
  if ((${#pkgs[@]} > 0)); then
    apt_install "${pkgs[@]}"
  fi
}

# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL

pg_cluster_version() {
  local v
  v="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
  if [[ -z "$v" ]]; then
    v="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1)"
  fi
  printf '%s' "$v"
}

# The application role works over TCP with its password, may create databases and owns its database.
pg_member_ok() {
  local out
  out="$(PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=5 timeout 10 psql -X -q -At -h "$HOST" -p "$PG_PORT" \
    -U "$DB_USER" -d "$DB_USER" \
    -c "SELECT r.rolcreatedb::text || '|' || pg_get_userbyid(d.datdba) FROM pg_roles r, pg_database d
        WHERE r.rolname = current_user AND d.datname = current_database()" 2>/dev/null)" || return 1
  [[ "$out" == "true|$DB_USER" ]]
}

pg_ensure_member() {
  if pg_member_ok; then
    info "postgres: role '$DB_USER' (LOGIN CREATEDB) and database '$DB_USER' ok"
    return 0
  fi
  info "postgres: creating/updating role '$DB_USER' (LOGIN CREATEDB, password) and database '$DB_USER'"
  as_postgres timeout 30 psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres <<'SQL' >/dev/null ||
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'member') THEN
    CREATE ROLE member LOGIN CREATEDB PASSWORD 'member';
  ELSE
    ALTER ROLE member LOGIN CREATEDB PASSWORD 'member';
  END IF;
END
$$;
SELECT 'CREATE DATABASE member OWNER member'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'member')\gexec
ALTER DATABASE member OWNER TO member;
SQL
    die "postgres: could not create the role/database as the postgres OS user (is the server on 127.0.0.1:$PG_PORT a local cluster?)"
  pg_member_ok || die "postgres: '$DB_USER' still cannot log in over TCP to 127.0.0.1:$PG_PORT with its password (check pg_hba.conf)"
  info "postgres: role '$DB_USER' and database '$DB_USER' ready"
}

up_postgres() {
  if svc_answers postgres; then
    say_running postgres
  else
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || apt_install postgresql
    command -v pg_ctlcluster >/dev/null 2>&1 || die "postgres: pg_ctlcluster missing (package postgresql-common)"
    local ver
    ver="$(pg_cluster_version)"
    [[ -n "$ver" ]] || die "postgres: no PostgreSQL version found under /usr/lib/postgresql"
    if [[ ! -d "/etc/postgresql/$ver/main" ]]; then
      info "postgres: creating cluster $ver/main"
      as_root timeout 120 pg_createcluster "$ver" main </dev/null >>"$LOG_DIR/postgres.log" 2>&1 ||
        die "postgres: pg_createcluster $ver main failed (see $LOG_DIR/postgres.log)"
    fi
    info "postgres: starting cluster $ver/main (pg_ctlcluster)"
    spawn_closed as_root timeout 120 pg_ctlcluster --skip-systemctl-redirect "$ver" main start \
      </dev/null >>"$LOG_DIR/postgres.log" 2>&1 ||
      die "postgres: pg_ctlcluster $ver main start failed (see $LOG_DIR/postgres.log and /var/log/postgresql/)"
    wait_for postgres "$STACK_TIMEOUT" svc_answers postgres ||
      die "postgres: not answering on $HOST:$PG_PORT after ${STACK_TIMEOUT}s (see /var/log/postgresql/)"
    local pid=""
    if [[ -r "/var/run/postgresql/$ver-main.pid" ]]; then
      pid="$(pid_from_file "/var/run/postgresql/$ver-main.pid" || true)"
    fi
    if [[ -z "$pid" ]]; then
      pid="$(as_root head -n 1 "/var/lib/postgresql/$ver/main/postmaster.pid" 2>/dev/null || true)"
    fi
    if [[ "$pid" =~ ^[0-9]+$ ]]; then
      echo "$pid" >"$(pidfile_of postgres)"
      echo "$ver" >"$RUN_DIR/postgres.cluster"
      register_started postgres >/dev/null
    else
      warn "postgres: started, but its pid is unknown; 'down' will leave it running"
    fi
    info "postgres: answering on $HOST:$PG_PORT (cluster $ver/main, pid ${pid:-?})"
  fi
  pg_ensure_member
}

stop_postgres() {
  local pid ver
  pid="$(svc_managed_pid postgres)" || return 1
  ver="$(cat "$RUN_DIR/postgres.cluster" 2>/dev/null || pg_cluster_version)"
  info "postgres: stopping cluster $ver/main (pid $pid)"
  as_root timeout 120 pg_ctlcluster --skip-systemctl-redirect "$ver" main stop -m fast \
    </dev/null >>"$LOG_DIR/postgres.log" 2>&1 || stop_pid postgres "$pid" 60
  rm -f "$(pidfile_of postgres)" "$RUN_DIR/postgres.cluster"
  unregister_pid postgres
}

# ---------------------------------------------------------------------------------------------------------------
# MariaDB

# How SHOW GRANTS prints the grant on the member_ databases.
# shellcheck disable=SC2016 # backticks are literal here
MARIADB_GRANT='`member\_%`.*'

mariadb_member_ok() {
  local grants_tcp grants_sock
  grants_tcp="$(timeout 10 mariadb --protocol=tcp -h "$HOST" -P "$MARIADB_PORT" --connect-timeout=5 \
    -u "$DB_USER" -p"$DB_PASSWORD" -N -r -e 'SHOW GRANTS' 2>/dev/null)" || return 1
  [[ "$grants_tcp" == *"$MARIADB_GRANT"* ]] || return 1
  # 'member'@'localhost' is what socket (and, without skip-name-resolve, some TCP) connections match.
  grants_sock="$(timeout 10 mariadb --protocol=socket --connect-timeout=5 \
    -u "$DB_USER" -p"$DB_PASSWORD" -N -r -e 'SHOW GRANTS' 2>/dev/null)" || return 1
  [[ "$grants_sock" == *"$MARIADB_GRANT"* ]]
}

mariadb_ensure_member() {
  if mariadb_member_ok; then
    info "mariadb: user '$DB_USER'@'127.0.0.1'/'localhost' with ALL ON \`member\\_%\`.* ok"
    return 0
  fi
  info "mariadb: creating/updating user '$DB_USER'@'127.0.0.1' and '$DB_USER'@'localhost' (ALL ON \`member\\_%\`.*)"
  as_root timeout 30 mariadb -uroot <<'SQL' >/dev/null ||
CREATE USER IF NOT EXISTS 'member'@'127.0.0.1' IDENTIFIED BY 'member';
CREATE USER IF NOT EXISTS 'member'@'localhost' IDENTIFIED BY 'member';
ALTER USER 'member'@'127.0.0.1' IDENTIFIED BY 'member';
ALTER USER 'member'@'localhost' IDENTIFIED BY 'member';
GRANT ALL PRIVILEGES ON `member\_%`.* TO 'member'@'127.0.0.1';
GRANT ALL PRIVILEGES ON `member\_%`.* TO 'member'@'localhost';
FLUSH PRIVILEGES;
SQL
    die "mariadb: could not create the user as root through the socket ('mariadb -uroot'); is the server on $HOST:$MARIADB_PORT local?"
  mariadb_member_ok || die "mariadb: '$DB_USER' still cannot log in to $HOST:$MARIADB_PORT with its grants"
  info "mariadb: user '$DB_USER' ready"
}

up_mariadb() {
  if svc_answers mariadb; then
    say_running mariadb
  else
    [[ -x /usr/sbin/mariadbd ]] || apt_install mariadb-server
    as_root mkdir -p /run/mysqld
    as_root chown mysql:mysql /run/mysqld
    info "mariadb: starting /usr/sbin/mariadbd (log: $LOG_DIR/mariadb.log and its configured error log)"
    spawn_closed as_root timeout 30 start-stop-daemon --start --oknodo --background \
      --make-pidfile --pidfile "$(pidfile_of mariadb)" --output "$LOG_DIR/mariadb.log" \
      --exec /usr/sbin/mariadbd -- --user=mysql </dev/null ||
      die "mariadb: start-stop-daemon failed"
    wait_for mariadb "$STACK_TIMEOUT" svc_answers mariadb ||
      die "mariadb: not answering on $HOST:$MARIADB_PORT after ${STACK_TIMEOUT}s (see $LOG_DIR/mariadb.log, /var/log/mysql/)"
    info "mariadb: answering on $HOST:$MARIADB_PORT (pid $(register_started mariadb))"
  fi
  mariadb_ensure_member
}

# ---------------------------------------------------------------------------------------------------------------
# Redis A (6379) and B (6380)

up_redis() {
  local svc="$1" port
  port="$(svc_port "$svc")"
  if svc_answers "$svc"; then
    say_running "$svc"
    return 0
  fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  mkdir -p "$DATA_DIR/$svc"
  info "$svc: starting redis-server on $HOST:$port (data: $DATA_DIR/$svc, log: $LOG_DIR/$svc.log)"
  # AOF (fsync every second): a restarted center comes back with its documents, and its projector
  # only has to catch up on what it missed. Without it, a restart needs `member rebuild`.
  spawn_closed timeout 30 redis-server --port "$port" --bind "$HOST" --daemonize yes --save "" \
    --appendonly yes --appendfsync everysec \
    --dir "$DATA_DIR/$svc" --pidfile "$(pidfile_of "$svc")" --logfile "$LOG_DIR/$svc.log" </dev/null ||
    die "$svc: redis-server failed to start (see $LOG_DIR/$svc.log)"
  wait_for "$svc" "$STACK_TIMEOUT" svc_answers "$svc" ||
    die "$svc: not answering on $HOST:$port after ${STACK_TIMEOUT}s (see $LOG_DIR/$svc.log)"
  info "$svc: answering on $HOST:$port (pid $(register_started "$svc"))"
  remember_state_dir "$svc"
}

# ---------------------------------------------------------------------------------------------------------------
# Apache Kafka on 9092 (one combined broker/controller, KRaft; data in $DATA_DIR/kafka, see scripts/kafka.sh)

up_kafka() {
  if svc_answers kafka; then
    say_running kafka
    return 0
  fi
  "$SCRIPTS_DIR/install-kafka.sh"
  ensure_java
  local dir="$DATA_DIR/kafka" pidfile log="$LOG_DIR/kafka.log" started=$SECONDS
  pidfile="$(pidfile_of kafka)"
  kafka_configure "$dir" 1 "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "1@$HOST:$KAFKA_CONTROLLER_PORT" \
    offsets.topic.replication.factor=1 transaction.state.log.replication.factor=1 \
    transaction.state.log.min.isr=1 share.coordinator.state.topic.replication.factor=1 \
    share.coordinator.state.topic.min.isr=1
  kafka_format "$dir" "$(kafka_cluster_id "$dir")"
  info "kafka: starting Apache Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (heap $KAFKA_HEAP, data: $dir, log: $log)"
  kafka_launch "$dir" "$pidfile" "$log"
  kafka_wait kafka "$KAFKA_PORT" "$pidfile" "$log" "$STACK_TIMEOUT"
  info "kafka: answering on $HOST:$KAFKA_PORT after $((SECONDS - started))s (pid $(register_started kafka))"
  remember_state_dir kafka
}

# ---------------------------------------------------------------------------------------------------------------
# generic start/stop

up_one() {
  local svc="$1" dir
  # Redis and the broker keep data under a state dir: start them where they last ran (see lib.sh).
  if [[ "$svc" == redis-a || "$svc" == redis-b || "$svc" == kafka || "$svc" == search-* ]] &&
    dir="$(remembered_state_dir "$svc")" && [[ "$dir" != "$STACK_DIR" ]] && ! svc_answers "$svc"; then
    info "$svc: starting with its previous state dir $dir (it keeps its data there)"
    (
      STACK_DIR="$dir" DATA_DIR="$dir/data" LOG_DIR="$dir/logs" RUN_DIR="$dir/run"
      up_one_here "$svc"
    ) || exit $?
    return 0
  fi
  up_one_here "$svc"
}

up_one_here() {
  ensure_dirs
  case "$1" in
    postgres) up_postgres ;;
    mariadb) up_mariadb ;;
    redis-a | redis-b) up_redis "$1" ;;
    kafka) up_kafka ;;
    search-*) up_elasticsearch "$1" ;;
    *) die "unknown service '$1' (known: ${SERVICES[*]})" ;;
  esac
}

# stop_managed SERVICE: 0 stopped, 1 nothing of ours was running. Never touches a service we did not start.
stop_managed() {
  local svc="$1" pid
  if [[ "$svc" == postgres ]]; then
    stop_postgres
    return
  fi
  pid="$(svc_managed_pid "$svc")" || return 1
  local dir
  dir="$(managed_dir "$svc" "$(svc_pattern "$svc")")"
  if [[ "$dir" != "$STACK_DIR" ]]; then
    info "$svc: stopping (pid $pid, started by scripts/stack.sh with state dir $dir)"
  else
    info "$svc: stopping (pid $pid)"
  fi
  stop_pid "$svc" "$pid" 60
  rm -f "$(pidfile_of "$svc")"
  unregister_pid "$svc"
  # Whoever starts it next starts it there, with its data.
  [[ -n "$dir" ]] && (STACK_DIR="$dir" remember_state_dir "$svc")
}

cmd_stop_service() {
  local svc="$1" port
  port="$(svc_port "$svc")"
  take_stack_lock
  if stop_managed "$svc"; then
    local deadline=$((SECONDS + 10))
    while svc_answers "$svc" && ((SECONDS < deadline)); do sleep 0.2; done
    if svc_answers "$svc"; then
      die "$svc: stopped our process, but something still answers on $HOST:$port"
    fi
    info "$svc: stopped"
  elif svc_answers "$svc"; then
    printf '[stack] REFUSED: %s on %s:%s was not started by scripts/stack.sh (no live pidfile in %s nor in %s); not stopping it\n' \
      "$svc" "$HOST" "$port" "$RUN_DIR" "$CACHE_DIR/pids" >&2
    exit 2
  else
    info "$svc: not running; nothing to stop"
  fi
}

cmd_start_service() {
  svc_port "$1" >/dev/null
  take_stack_lock
  up_one "$1"
}

cmd_up() {
  take_stack_lock
  local started=$SECONDS failed=() svc
  info "bringing the local stack up (state: $STACK_DIR)"
  preinstall
  for svc in "${SERVICES[@]}"; do
    # A separate process per service: one failure is reported and the others still start.
    if ! "$SELF" __up-one "$svc"; then
      failed+=("$svc")
    fi
  done
  for svc in "${SERVICES[@]}"; do
    if [[ " ${failed[*]} " != *" $svc "* ]] && ! svc_answers "$svc"; then
      failed+=("$svc")
    fi
  done
  if ((${#failed[@]} > 0)); then
    for svc in "${failed[@]}"; do
      printf '[stack] FAILED: %s is not answering on %s:%s (logs: %s)\n' "$svc" "$HOST" "$(svc_port "$svc")" "$LOG_DIR" >&2
    done
    exit 1
  fi
  info "all services answering ($((SECONDS - started))s)"
}

cmd_down() {
  take_stack_lock
  local svc i
  info "stopping the services started by scripts/stack.sh (state: $STACK_DIR)"
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
    svc="${SERVICES[$i]}"
    if stop_managed "$svc"; then
      info "$svc: stopped"
    elif svc_answers "$svc"; then
      info "$svc: not started by these scripts; left running"
    else
      info "$svc: not running"
    fi
  done
}

cmd_status() {
  local svc port state owner pid dir
  printf '%-16s %-16s %-6s %s\n' SERVICE ADDRESS STATE "STARTED BY"
  for svc in "${SERVICES[@]}"; do
    port="$(svc_port "$svc")"
    if svc_answers "$svc"; then state=up; else state=DOWN; fi
    if pid="$(svc_managed_pid "$svc" 2>/dev/null)"; then
      owner="scripts/stack.sh (pid $pid)"
      dir="$(managed_dir "$svc" "$(svc_pattern "$svc")")"
      [[ "$dir" == "$STACK_DIR" ]] || owner+=" from $dir"
    elif [[ "$state" == up ]]; then
      owner="external (used as is)"
    else
      owner="-"
    fi
    printf '%-16s %-16s %-6s %s\n' "$svc" "$HOST:$port" "$state" "$owner"
  done
  printf 'state dir: %s   kafka: %s\n' "$STACK_DIR" \
    "$([[ -f "$KAFKA_HOME/.complete" ]] && echo "$KAFKA_HOME" || echo "not installed ($KAFKA_HOME)")"
}

cmd_check() {
  local svcs=("$@") svc
  ((${#svcs[@]} > 0)) || svcs=("${SERVICES[@]}")
  for svc in "${svcs[@]}"; do
    svc_port "$svc" >/dev/null
    svc_answers "$svc" || return 1
  done
}

need_service() {
  [[ $# -ge 1 && -n "$1" ]] || {
    usage >&2
    exit 64
  }
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    check) cmd_check "$@" ;;
    start-service)
      need_service "$@"
      cmd_start_service "$1"
      ;;
    stop-service)
      need_service "$@"
      cmd_stop_service "$1"
      ;;
    restart-service)
      need_service "$@"
      svc_port "$1" >/dev/null
      take_stack_lock
      cmd_stop_service "$1"
      cmd_start_service "$1"
      ;;
    __up-one) up_one "$1" ;;
    -h | --help | help) usage ;;
    *)
      usage >&2
      exit 64
      ;;
  esac
}

main "$@"
