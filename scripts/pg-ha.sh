#!/usr/bin/env bash
# A private highly available event store for the two-center tests and drills (ADR 0037), apart from the
# stack's PostgreSQL: two Patroni-managed PostgreSQL 15 nodes (center A and center B, synchronous_mode: a
# commit is acknowledged only once the synchronous standby has it), three etcd members (A, B and the witness W) and, in each
# center, HAProxy following the leader through Patroni's REST check (`GET /primary`).
# synchronous_mode_strict is MEMBER_PGHA_STRICT (default false: see ADR 0037).
#
# Each center is a network namespace of its own, joined to a bridge in the host namespace by a veth pair:
# killing a center kills its processes; cutting it takes its link down while they keep running.
#
#   pg-ha.sh up DIR BASE_PORT        install what is missing, start (or resume) the cluster in DIR; A leads
#   pg-ha.sh down DIR                stop every process of the cluster, remove its namespaces (data stays)
#   pg-ha.sh kill-node DIR a|b       SIGKILL the center's Patroni and PostgreSQL (etcd, HAProxy keep running)
#   pg-ha.sh start-node DIR a|b      start the center's Patroni again (it rejoins, as a replica if B leads)
#   pg-ha.sh kill-center DIR a|b|w   SIGKILL every process of the center
#   pg-ha.sh start-center DIR a|b|w  start every process of the center that is not running
#   pg-ha.sh cut DIR a|b|w           take the center's link down (its processes keep running)
#   pg-ha.sh heal DIR a|b|w          bring it up again
#   pg-ha.sh leader DIR              print the center whose node leads (a or b), seen from the host
#   pg-ha.sh role DIR a|b            the node's own view (primary, replica, ...), asked inside its center
#   pg-ha.sh endpoint DIR a|b        host:port of the center's leader-following endpoint (HAProxy)
#   pg-ha.sh url DIR a|b [DB]        postgres://member:member@<endpoint>/DB (default member)
#   pg-ha.sh node-url DIR a|b [DB]   the same, straight to the center's PostgreSQL (no endpoint)
#   pg-ha.sh sql DIR a|b SQL         run SQL as `member` on the center's node, from inside the center
#   pg-ha.sh patronictl DIR ARGS...  patronictl with the cluster's configuration (list, switchover, ...)
#
# Ports, in every center's namespace: etcd client BASE_PORT, peer +1; PostgreSQL +2; Patroni REST +3;
# HAProxy +4. Addresses: 10.X.Y.1 the host's bridge, .2 center A, .3 center B, .4 the witness (X.Y derived
# from DIR). Every process runs as the `postgres` OS user with its data and log under DIR/<center>.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_BIN=/usr/lib/postgresql/15/bin
# Patroni from PyPI (scripts/patroni/requirements.txt pins it and its dependencies), in a virtual environment
# outside the clone that the `postgres` user can read (the download cache stays in CACHE_DIR).
PATRONI_VERSION=4.1.5
PATRONI_HOME="${MEMBER_PATRONI_HOME:-/opt/member-stack/patroni-$PATRONI_VERSION}"
PATRONI_BIN="$PATRONI_HOME/bin/patroni"
PATRONICTL_BIN="$PATRONI_HOME/bin/patronictl"
CENTERS=(a b w)
# Timings of the DCS (seconds): a leader that cannot renew its key for TTL loses it; B is promoted then.
# 20 is the least TTL Patroni 4 accepts.
PGHA_TTL="${MEMBER_PGHA_TTL:-20}"
PGHA_LOOP_WAIT="${MEMBER_PGHA_LOOP_WAIT:-1}"
PGHA_RETRY_TIMEOUT="${MEMBER_PGHA_RETRY_TIMEOUT:-3}"
PGHA_TIMEOUT="${MEMBER_STACK_TIMEOUT:-90}"
# synchronous_mode_strict (ADR 0037): with two data nodes, strict mode stops every write while either node is
# down, B's promotion included. Off by default; on for a deployment with a third data node.
PGHA_STRICT="${MEMBER_PGHA_STRICT:-false}"

ha_info() { printf '[pg-ha] %s\n' "$*"; }

usage() {
  sed -n '2,28p' "$0" >&2
  exit 64
}

# ---------------------------------------------------------------------------------------------------------------
# installation

ensure_installed() {
  local pkgs=()
  [[ -x /usr/bin/python3 ]] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
  [[ -x /usr/bin/etcd ]] || pkgs+=(etcd-server)
  [[ -x /usr/sbin/haproxy ]] || pkgs+=(haproxy)
  [[ -x "$PG_BIN/postgres" ]] || pkgs+=(postgresql-15)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
  command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
  if ((${#pkgs[@]} > 0)); then
    apt_install "${pkgs[@]}"
  fi
  ensure_patroni
}

patroni_installed() { [[ -f "$PATRONI_HOME/.complete" && -x "$PATRONI_BIN" ]]; }

# Once per machine, under a lock: tests start clusters in parallel.
ensure_patroni() {
  patroni_installed && return 0
  mkdir -p "$CACHE_DIR" "$(dirname "$PATRONI_HOME")"
  local lock="$CACHE_DIR/patroni-$PATRONI_VERSION.lock" log="$CACHE_DIR/patroni-install.log"
  exec 8>"$lock"
  flock -w "$LOCK_TIMEOUT" 8 || die "pg-ha: timed out waiting for the Patroni install lock ($lock)"
  if ! patroni_installed; then
    ha_info "installing Patroni $PATRONI_VERSION from PyPI into $PATRONI_HOME (log: $log)"
    # A virtual environment records its own path, so it is built where it lives; `.complete` marks it whole.
    rm -rf "$PATRONI_HOME"
    # Debian's Python: the `postgres` user runs it (a pyenv Python under /root is out of its reach).
    if ! { /usr/bin/python3 -m venv "$PATRONI_HOME" &&
      timeout "$APT_TIMEOUT" "$PATRONI_HOME/bin/pip" install -q --disable-pip-version-check \
        --cache-dir "$CACHE_DIR/pip" -r "$SCRIPTS_DIR/patroni/requirements.txt"; } </dev/null >"$log" 2>&1; then
      tail -n 20 "$log" >&2 || true
      rm -rf "$PATRONI_HOME"
      die "pg-ha: installing Patroni failed (full log: $log)"
    fi
    chmod -R a+rX "$PATRONI_HOME"
    touch "$PATRONI_HOME/.complete"
  fi
  exec 8>&-
}

# ---------------------------------------------------------------------------------------------------------------
# layout

abs_dir() {
  mkdir -p "$1"
  (cd "$1" && pwd)
}

# A short tag of DIR: names of namespaces, bridge and veths (at most 15 characters) and the subnet.
dir_tag() { printf '%s' "$1" | cksum | awk '{printf "%06x", $1 % 16777216}'; }

load_env() {
  DIR="$(abs_dir "$1")"
  [[ -f "$DIR/cluster.env" ]] || die "pg-ha: no cluster in $DIR (run 'up' first)"
  # shellcheck disable=SC1091
  source "$DIR/cluster.env"
  LOG_DIR="$DIR"
}

check_center() {
  case "$1" in
    a | b | w) ;;
    *) die "pg-ha: unknown center '$1' (a, b or w)" ;;
  esac
}

check_node() {
  case "$1" in
    a | b) ;;
    *) die "pg-ha: '$1' has no PostgreSQL node (a or b)" ;;
  esac
}

ns_of() { printf 'pgha%s%s' "$TAG" "$1"; }
host_veth() { printf 'vh%s%s' "$TAG" "$1"; }
ns_veth() { printf 'vn%s%s' "$TAG" "$1"; }
bridge() { printf 'br%s' "$TAG"; }
ip_of() {
  case "$1" in
    a) printf '%s.2' "$SUBNET" ;;
    b) printf '%s.3' "$SUBNET" ;;
    w) printf '%s.4' "$SUBNET" ;;
  esac
}
ETCD_PORT() { echo "$BASE_PORT"; }
PEER_PORT() { echo $((BASE_PORT + 1)); }
PG_NODE_PORT() { echo $((BASE_PORT + 2)); }
REST_PORT() { echo $((BASE_PORT + 3)); }
PROXY_PORT() { echo $((BASE_PORT + 4)); }

# A /24 not in use on this machine, derived from the tag (tried onwards on a collision).
pick_subnet() {
  local n=$((16#$TAG % 12000)) i x y
  for ((i = 0; i < 200; i++)); do
    x=$((100 + (n + i) / 250 % 100))
    y=$(((n + i) % 250 + 1))
    if ! ip -4 addr show | grep -q "inet 10\.$x\.$y\."; then
      printf '10.%s.%s' "$x" "$y"
      return 0
    fi
  done
  die "pg-ha: no free 10.x.y.0/24 subnet"
}

# ---------------------------------------------------------------------------------------------------------------
# network: a bridge in the host namespace, one namespace per center

ensure_network() {
  local br c ns
  br="$(bridge)"
  if ! ip link show "$br" >/dev/null 2>&1; then
    ip link add "$br" type bridge
    ip addr add "$SUBNET.1/24" dev "$br"
  fi
  ip link set "$br" up
  for c in "${CENTERS[@]}"; do
    ns="$(ns_of "$c")"
    ip netns list | grep -qw "^$ns" || ip netns add "$ns"
    ip -n "$ns" link set lo up
    if ! ip -n "$ns" link show "$(ns_veth "$c")" >/dev/null 2>&1; then
      ip link del "$(host_veth "$c")" 2>/dev/null || true
      ip link add "$(host_veth "$c")" type veth peer name "$(ns_veth "$c")" netns "$ns"
      ip -n "$ns" addr add "$(ip_of "$c")/24" dev "$(ns_veth "$c")"
      ip link set "$(host_veth "$c")" master "$br"
    fi
    ip -n "$ns" link set "$(ns_veth "$c")" up
    # A cut center stays cut across an `up` (heal brings it back).
    [[ -f "$DIR/$c/cut" ]] || ip link set "$(host_veth "$c")" up
  done
}

remove_network() {
  local c
  for c in "${CENTERS[@]}"; do
    ip link del "$(host_veth "$c")" 2>/dev/null || true
    ip netns del "$(ns_of "$c")" 2>/dev/null || true
  done
  ip link del "$(bridge)" 2>/dev/null || true
}

in_ns() {
  local c="$1"
  shift
  ip netns exec "$(ns_of "$c")" "$@"
}

# ---------------------------------------------------------------------------------------------------------------
# processes

# spawn CENTER NAME COMMAND...: start COMMAND as postgres in the center's namespace, in its own session, output
# in DIR/CENTER/NAME.log, pid in DIR/CENTER/NAME.pid. Every link of the chain execs, so the pid is the process's.
spawn() {
  local c="$1" name="$2"
  shift 2
  local log="$DIR/$c/$name.log"
  setsid ip netns exec "$(ns_of "$c")" \
    setpriv --reuid=postgres --regid=postgres --init-groups --reset-env "$@" \
    </dev/null >>"$log" 2>&1 9>&- &
  printf '%s\n' "$!" >"$DIR/$c/$name.pid"
}

# alive CENTER NAME PATTERN: the recorded process runs and its command line contains PATTERN.
alive() {
  local pid
  pid="$(pid_from_file "$DIR/$1/$2.pid")" || return 1
  pid_matches "$pid" "$3"
}

kill_recorded() {
  local c="$1" name="$2" pattern="$3" pid
  pid="$(pid_from_file "$DIR/$c/$name.pid")" || return 0
  if pid_matches "$pid" "$pattern"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/$c/$name.pid"
}

# The postmaster of a node and every process it started, by pid.
kill_postgres() {
  local c="$1" pid
  pid="$(pid_from_file "$DIR/$c/data/postmaster.pid")" || return 0
  pid_matches "$pid" "$PG_BIN/postgres" || return 0
  # The children first: once the postmaster is gone they belong to init.
  local children
  children="$(pgrep -P "$pid" | tr '\n' ' ')"
  # shellcheck disable=SC2086 # a list of pids
  kill -KILL "$pid" $children 2>/dev/null || true
  # shellcheck disable=SC2086
  wait_gone "$pid" $children
}

wait_gone() {
  local pid deadline=$((SECONDS + 10))
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  done
}

# ---------------------------------------------------------------------------------------------------------------
# configuration

etcd_cluster() {
  local c list=""
  for c in "${CENTERS[@]}"; do
    list+="${list:+,}$c=http://$(ip_of "$c"):$(PEER_PORT)"
  done
  printf '%s' "$list"
}

etcd_hosts() {
  local c list=""
  for c in "${CENTERS[@]}"; do list+="${list:+, }$(ip_of "$c"):$(ETCD_PORT)"; done
  printf '[%s]' "$list"
}

write_patroni_config() {
  local c="$1" ip
  ip="$(ip_of "$c")"
  cat >"$DIR/$c/patroni.yml" <<EOF
scope: member-event-store
name: $c
log:
  level: INFO
restapi:
  listen: $ip:$(REST_PORT)
  connect_address: $ip:$(REST_PORT)
etcd3:
  hosts: $(etcd_hosts)
bootstrap:
  dcs:
    ttl: $PGHA_TTL
    loop_wait: $PGHA_LOOP_WAIT
    retry_timeout: $PGHA_RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    synchronous_mode_strict: $PGHA_STRICT
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        wal_log_hints: "on"
        hot_standby: "on"
        max_connections: 80
        max_wal_senders: 5
        max_replication_slots: 5
        shared_buffers: 32MB
        max_wal_size: 256MB
        wal_keep_size: 64MB
        # A demoting leader waits for its walsenders; an unreachable standby must not hold it for 60 s.
        wal_sender_timeout: 10s
        wal_receiver_timeout: 10s
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
postgresql:
  listen: $ip:$(PG_NODE_PORT)
  connect_address: $ip:$(PG_NODE_PORT)
  data_dir: $DIR/$c/data
  bin_dir: $PG_BIN
  pgpass: $DIR/$c/pgpass
  authentication:
    superuser:
      username: postgres
      password: pgha-superuser
    replication:
      username: replicator
      password: pgha-replicator
    rewind:
      username: postgres
      password: pgha-superuser
  parameters:
    unix_socket_directories: $DIR/$c/run
    log_min_messages: warning
    log_connections: "off"
  pg_hba:
    - local all all trust
    - host replication replicator $SUBNET.0/24 scram-sha-256
    - host all all $SUBNET.0/24 scram-sha-256
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
}

write_haproxy_config() {
  local c="$1" n
  {
    cat <<EOF
global
  maxconn 200
defaults
  mode tcp
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  timeout check 1s
listen event-store
  bind $(ip_of "$c"):$(PROXY_PORT)
  option httpchk GET /primary
  http-check expect status 200
  default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
EOF
    for n in a b; do
      printf '  server %s %s:%s check port %s\n' "$n" "$(ip_of "$n")" "$(PG_NODE_PORT)" "$(REST_PORT)"
    done
  } >"$DIR/$c/haproxy.cfg"
}

# ---------------------------------------------------------------------------------------------------------------
# starting

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

etcd_healthy() { [[ "$(curl -s -m 2 "http://$(ip_of "$1"):$(ETCD_PORT)/health" 2>/dev/null)" == *'"true"'* ]]; }

start_etcd() {
  local c="$1" ip
  alive "$c" etcd /usr/bin/etcd && return 0
  ip="$(ip_of "$c")"
  spawn "$c" etcd /usr/bin/etcd --name "$c" --data-dir "$DIR/$c/etcd" \
    --listen-client-urls "http://$ip:$(ETCD_PORT)" --advertise-client-urls "http://$ip:$(ETCD_PORT)" \
    --listen-peer-urls "http://$ip:$(PEER_PORT)" --initial-advertise-peer-urls "http://$ip:$(PEER_PORT)" \
    --initial-cluster "$(etcd_cluster)" --initial-cluster-state new --initial-cluster-token "pgha-$TAG" \
    --heartbeat-interval 100 --election-timeout 1000 --quota-backend-bytes 67108864 \
    --snapshot-count 10000 --logger zap --log-level warn
}

start_patroni() {
  local c="$1"
  alive "$c" patroni "$PATRONI_BIN" && return 0
  # A SIGKILLed postmaster may leave backends behind for a moment; Patroni starts it again itself.
  spawn "$c" patroni "$PATRONI_BIN" "$DIR/$c/patroni.yml"
}

start_haproxy() {
  local c="$1"
  alive "$c" haproxy /usr/sbin/haproxy && return 0
  spawn "$c" haproxy /usr/sbin/haproxy -db -f "$DIR/$c/haproxy.cfg"
}

start_center() {
  local c="$1"
  mkdir -p "$DIR/$c"
  start_etcd "$c"
  if [[ "$c" != w ]]; then
    mkdir -p "$DIR/$c/run"
    chown -R postgres:postgres "$DIR/$c"
    chmod 0700 "$DIR/$c/run"
    start_patroni "$c"
    start_haproxy "$c"
  fi
}

is_primary() { [[ "$(http_code "http://$(ip_of "$1"):$(REST_PORT)/primary")" == 200 ]]; }
is_sync() { [[ "$(http_code "http://$(ip_of "$1"):$(REST_PORT)/sync")" == 200 ]]; }
proxy_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$(ip_of "$1")/$(PROXY_PORT)" 2>/dev/null; }

node_sql() {
  local c="$1"
  shift
  in_ns "$c" setpriv --reuid=postgres --regid=postgres --init-groups --reset-env \
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR/$c/run" -p "$(PG_NODE_PORT)" -U postgres "$@"
}

writable() { [[ "$(node_sql "$1" -d postgres -tAc "SELECT NOT pg_is_in_recovery()" 2>/dev/null)" == t ]]; }

ensure_member_role() {
  local leader="$1"
  node_sql "$leader" -d postgres -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'member') THEN
        CREATE ROLE member LOGIN CREATEDB PASSWORD 'member';
      END IF; END \$\$;" >/dev/null
  if [[ "$(node_sql "$leader" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'member'")" != 1 ]]; then
    node_sql "$leader" -d postgres -c "CREATE DATABASE member OWNER member" >/dev/null
  fi
}

current_leader() {
  local c
  for c in a b; do
    if is_primary "$c"; then
      printf '%s' "$c"
      return 0
    fi
  done
  return 1
}

# ---------------------------------------------------------------------------------------------------------------
# commands

cmd_up() {
  local dir="$1" base="$2" c leader
  [[ "$(id -u)" -eq 0 ]] || die "pg-ha: network namespaces need root"
  DIR="$(abs_dir "$dir")"
  LOG_DIR="$DIR"
  ensure_installed
  if [[ ! -f "$DIR/cluster.env" ]]; then
    TAG="$(dir_tag "$DIR")"
    printf 'BASE_PORT=%s\nTAG=%s\nSUBNET=%s\n' "$base" "$TAG" "$(pick_subnet)" >"$DIR/cluster.env"
  fi
  load_env "$DIR"
  # The postgres user must reach its directories below DIR (a test's temporary directory is 0700).
  chmod 0755 "$DIR"
  ensure_network
  for c in a b; do
    mkdir -p "$DIR/$c"
    write_patroni_config "$c"
    write_haproxy_config "$c"
  done
  for c in "${CENTERS[@]}"; do
    mkdir -p "$DIR/$c"
    chown postgres:postgres "$DIR/$c"
    start_etcd "$c"
  done
  for c in "${CENTERS[@]}"; do
    wait_for "etcd-$c" "$PGHA_TIMEOUT" etcd_healthy "$c" || die "pg-ha: etcd $c does not answer (see $DIR/$c/etcd.log)"
  done
  # A first, so that on a fresh cluster A bootstraps and leads; B then clones it.
  start_center a
  if [[ ! -f "$DIR/b/data/PG_VERSION" ]]; then
    wait_for "patroni-a" "$PGHA_TIMEOUT" is_primary a || die "pg-ha: A did not become the leader (see $DIR/a/patroni.log)"
  fi
  start_center b
  start_center w
  wait_for leader "$PGHA_TIMEOUT" current_leader || die "pg-ha: no leader (see $DIR/{a,b}/patroni.log)"
  leader="$(current_leader)"
  local other=b
  [[ "$leader" == b ]] && other=a
  wait_for "sync standby" "$PGHA_TIMEOUT" is_sync "$other" ||
    die "pg-ha: $other is not the synchronous standby (see $DIR/$other/patroni.log)"
  wait_for "leader-writable" "$PGHA_TIMEOUT" writable "$leader" || die "pg-ha: $leader does not take writes"
  ensure_member_role "$leader"
  for c in a b; do
    wait_for "haproxy-$c" "$PGHA_TIMEOUT" proxy_open "$c" || die "pg-ha: HAProxy $c does not answer (see $DIR/$c/haproxy.log)"
  done
  ha_info "leader $leader, synchronous standby $other; endpoints A $(ip_of a):$(PROXY_PORT), B $(ip_of b):$(PROXY_PORT)"
}

cmd_down() {
  local c ns pids pid
  DIR="$(abs_dir "$1")"
  if [[ ! -f "$DIR/cluster.env" ]]; then
    return 0
  fi
  load_env "$DIR"
  # Only processes of our own namespaces: what this script started there, nothing else. PostgreSQL gets
  # SIGINT (fast shutdown; SIGTERM would wait for every session), the others SIGTERM; whatever still runs
  # after 5 s is SIGKILLed (PostgreSQL recovers from its WAL at the next start).
  local postmasters=" " pm
  for c in a b; do
    pm="$(pid_from_file "$DIR/$c/data/postmaster.pid")" && pid_matches "$pm" "$PG_BIN/postgres" && postmasters+="$pm "
  done
  for c in "${CENTERS[@]}"; do
    ns="$(ns_of "$c")"
    ip netns list | grep -qw "^$ns" || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      if [[ "$postmasters" == *" $pid "* ]]; then
        kill -INT "$pid" 2>/dev/null || true
      else
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done
  done
  for c in "${CENTERS[@]}"; do
    ns="$(ns_of "$c")"
    ip netns list | grep -qw "^$ns" || continue
    local deadline=$((SECONDS + 5))
    while [[ -n "$(ip netns pids "$ns" 2>/dev/null)" ]] && ((SECONDS < deadline)); do sleep 0.2; done
    pids="$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"
    # shellcheck disable=SC2086 # a list of pids
    [[ -n "${pids// /}" ]] && kill -KILL $pids 2>/dev/null || true
  done
  for c in "${CENTERS[@]}"; do rm -f "$DIR/$c"/*.pid "$DIR/$c/cut"; done
  remove_network
}

cmd_kill_node() {
  local c="$1" pid=""
  pid="$(pid_from_file "$DIR/$c/patroni.pid")" || true
  kill_recorded "$c" patroni "$PATRONI_BIN"
  kill_postgres "$c"
  [[ -z "$pid" ]] || wait_gone "$pid"
}

cmd_kill_center() {
  local c="$1" pids
  pids="$(ip netns pids "$(ns_of "$c")" 2>/dev/null | tr '\n' ' ')"
  # shellcheck disable=SC2086
  [[ -n "${pids// /}" ]] && kill -KILL $pids 2>/dev/null || true
  # shellcheck disable=SC2086
  wait_gone $pids
  rm -f "$DIR/$c"/*.pid
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    [[ $# -eq 2 ]] || usage
    cmd_up "$1" "$2"
    ;;
  down)
    [[ $# -eq 1 ]] || usage
    cmd_down "$1"
    ;;
  kill-node)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_node "$2"
    cmd_kill_node "$2"
    ;;
  start-node)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_node "$2"
    start_patroni "$2"
    ;;
  kill-center)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_center "$2"
    cmd_kill_center "$2"
    ;;
  start-center)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_center "$2"
    start_center "$2"
    ;;
  cut)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_center "$2"
    touch "$DIR/$2/cut"
    ip link set "$(host_veth "$2")" down
    ;;
  heal)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_center "$2"
    rm -f "$DIR/$2/cut"
    ip link set "$(host_veth "$2")" up
    ;;
  leader)
    [[ $# -eq 1 ]] || usage
    load_env "$1"
    current_leader || exit 1
    echo
    ;;
  role)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_node "$2"
    in_ns "$2" curl -s -m 2 "http://$(ip_of "$2"):$(REST_PORT)/patroni" |
      sed -n 's/.*"role": *"\([a-z_]*\)".*/\1/p'
    ;;
  endpoint)
    [[ $# -eq 2 ]] || usage
    load_env "$1"
    check_node "$2"
    echo "$(ip_of "$2"):$(PROXY_PORT)"
    ;;
  url | node-url)
    [[ $# -ge 2 ]] || usage
    load_env "$1"
    check_node "$2"
    port="$(PROXY_PORT)"
    [[ "$cmd" == node-url ]] && port="$(PG_NODE_PORT)"
    echo "postgres://$DB_USER:$DB_PASSWORD@$(ip_of "$2"):$port/${3:-member}"
    ;;
  sql)
    [[ $# -eq 3 ]] || usage
    load_env "$1"
    check_node "$2"
    in_ns "$2" env PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -tA \
      -h "$(ip_of "$2")" -p "$(PG_NODE_PORT)" -U "$DB_USER" -d member -c "$3"
    ;;
  patronictl)
    [[ $# -ge 1 ]] || usage
    load_env "$1"
    shift
    "$PATRONICTL_BIN" -c "$DIR/a/patroni.yml" "$@"
    ;;
  *)
    usage
    ;;
esac
