# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this file
# Helpers shared by scripts/stack.sh and the install scripts. Source it, do not run it.
#
# Environment knobs (all optional):
#   MEMBER_STACK_DIR         data, logs and pidfiles of the local stack   (default: <repo>/.stack)
#   MEMBER_CACHE_DIR         download cache outside the clone (Kafka jars) (default: $HOME/.cache/member-stack)
#   MEMBER_STACK_TIMEOUT     seconds to wait for one service to answer     (default: 60)
#   MEMBER_APT_TIMEOUT       seconds allowed for one apt-get call          (default: 900)
#   MEMBER_LOCK_TIMEOUT      seconds to wait for the stack lock            (default: 3600)
#   MEMBER_KAFKA_HEAP        the broker JVM's heap                          (default: 512m)

if [[ -n "${MEMBER_LIB_SOURCED:-}" ]]; then
  return 0
fi
MEMBER_LIB_SOURCED=1

SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$SCRIPTS_DIR/.." && pwd)"

STACK_DIR="${MEMBER_STACK_DIR:-$REPO_DIR/.stack}"
[[ "$STACK_DIR" == /* ]] || STACK_DIR="$PWD/$STACK_DIR"
DATA_DIR="$STACK_DIR/data"
LOG_DIR="$STACK_DIR/logs"
RUN_DIR="$STACK_DIR/run"

CACHE_DIR="${MEMBER_CACHE_DIR:-${HOME:-/root}/.cache/member-stack}"
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
KAFKA_VERSION="4.1.1"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
KAFKA_HEAP="${MEMBER_KAFKA_HEAP:-512m}"

STACK_TIMEOUT="${MEMBER_STACK_TIMEOUT:-60}"
APT_TIMEOUT="${MEMBER_APT_TIMEOUT:-900}"
LOCK_TIMEOUT="${MEMBER_LOCK_TIMEOUT:-3600}"

# Fixed local addresses (CONTRACT.md).
HOST="127.0.0.1"
PG_PORT=5432
MARIADB_PORT=3306
REDIS_A_PORT=6379
REDIS_B_PORT=6380
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093

# The credentials the application uses (config/default.toml).
DB_USER="member"
DB_PASSWORD="member"

# ---------------------------------------------------------------------------------------------------------------
# messages

info() { printf '[stack] %s\n' "$*"; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
  printf '[stack] ERROR: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------------------
# privileges and packages

# Run a command as root (directly, or through non-interactive sudo).
as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    die "need root (or password-less sudo) to run: $*"
  fi
}

# Run a command as the postgres OS user (peer/trust auth on the local socket).
as_postgres() {
  if [[ "$(id -u)" -eq 0 ]] && command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u postgres -- "$@")
  elif [[ "$(id -u)" -eq 0 ]]; then
    local quoted
    printf -v quoted '%q ' "$@"
    (cd / && su postgres -s /bin/sh -c "$quoted")
  else
    (cd / && as_root -u postgres "$@")
  fi
}

# apt-get update runs at most once per `stack.sh` invocation (the flag is exported to child scripts).
apt_install() {
  local pkgs=("$@")
  if [[ -z "${MEMBER_APT_UPDATED:-}" ]]; then
    info "apt-get update (once, because ${pkgs[*]} must be installed)"
    as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" \
      apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null >"$LOG_DIR/apt.log" 2>&1 ||
      die "apt-get update failed (see $LOG_DIR/apt.log)"
    export MEMBER_APT_UPDATED=1
  fi
  info "apt-get install ${pkgs[*]} (log: $LOG_DIR/apt.log)"
  as_root env DEBIAN_FRONTEND=noninteractive timeout "$APT_TIMEOUT" \
    apt-get -q -y -o DPkg::Lock::Timeout=300 --no-install-recommends install "${pkgs[@]}" \
    </dev/null >>"$LOG_DIR/apt.log" 2>&1 ||
    die "apt-get install ${pkgs[*]} failed (see $LOG_DIR/apt.log)"
}

# ensure_cmd COMMAND PACKAGE: install PACKAGE when COMMAND is not on PATH.
ensure_cmd() {
  local cmd="$1" pkg="$2"
  if ! command -v "$cmd" >/dev/null 2>&1 && [[ ! -x "$cmd" ]]; then
    apt_install "$pkg"
  fi
}

# The JVMs of the stack (Kafka; Elasticsearch) need Java 17 or 21: Debian's openjdk-17 when no suitable java is
# on PATH. JAVA_BIN is set to the one found.
ensure_java() {
  local v
  for JAVA_BIN in "${JAVA_HOME:+$JAVA_HOME/bin/java}" /usr/lib/jvm/java-17-openjdk-amd64/bin/java \
    /usr/lib/jvm/java-21-openjdk-amd64/bin/java "$(command -v java || true)"; do
    [[ -n "$JAVA_BIN" && -x "$JAVA_BIN" ]] || continue
    v="$("$JAVA_BIN" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
    [[ "$v" == 17 || "$v" == 21 ]] && return 0
  done
  apt_install openjdk-17-jre-headless
  JAVA_BIN=/usr/lib/jvm/java-17-openjdk-amd64/bin/java
  [[ -x "$JAVA_BIN" ]] || die "java 17 not found after installing openjdk-17-jre-headless"
}

# ---------------------------------------------------------------------------------------------------------------
# directories and the stack lock

ensure_dirs() {
  mkdir -p "$DATA_DIR" "$LOG_DIR" "$RUN_DIR"
}

# Serialize every state-changing command (up, down, start/stop/restart) across processes and clones (the ports
# are machine-wide, so the lock is too). Nested calls (a child stack.sh started while the lock is held) inherit
# the lock and do not take it again.
take_stack_lock() {
  if [[ -n "${MEMBER_STACK_LOCKED:-}" ]]; then
    return 0
  fi
  ensure_dirs
  mkdir -p "$CACHE_DIR"
  local lock="$CACHE_DIR/stack.lock"
  # fd 9 holds the lock; every daemon we start closes it (see spawn_closed).
  exec 9>"$lock"
  if ! flock -n 9; then
    info "waiting for another stack.sh run to finish (lock $lock, up to ${LOCK_TIMEOUT}s)"
    flock -w "$LOCK_TIMEOUT" 9 || die "timed out after ${LOCK_TIMEOUT}s waiting for $lock"
  fi
  export MEMBER_STACK_LOCKED=1
}

# Run a command with the lock fd closed, so daemons it leaves behind never hold the stack lock.
spawn_closed() {
  "$@" 9>&-
}

# ---------------------------------------------------------------------------------------------------------------
# probes

# tcp_open PORT: true when something accepts a TCP connection on 127.0.0.1:PORT (2 s timeout).
tcp_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

# wait_for NAME SECONDS CHECK...: poll CHECK every 0.5 s until it succeeds or SECONDS pass.
wait_for() {
  local name="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.5
  done
  return 0
}

# ---------------------------------------------------------------------------------------------------------------
# pidfiles

pidfile_of() { printf '%s/%s.pid' "$RUN_DIR" "$1"; }

# pid_from_file FILE: print the pid stored in FILE (nothing when missing/garbage).
pid_from_file() {
  local f="$1" pid=""
  [[ -f "$f" ]] || return 1
  read -r pid <"$f" || true
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  printf '%s' "$pid"
}

# pid_matches PID PATTERN: the process is alive and its command line contains PATTERN (guards against pid reuse).
pid_matches() {
  local pid="$1" pattern="$2" cmdline
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$pattern"* ]]
}

# The start time of a process (clock ticks since boot), which with the pid identifies it across pid reuse.
proc_starttime() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }" # drop "pid (comm) "; comm may contain spaces
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $stat
  printf '%s' "${20}"
}

# A machine-wide registry of what these scripts started, shared by every clone (and by CI's fresh clone): a
# service started from one clone's state directory can be stopped/restarted from another, while a service the
# scripts did not start is never touched. One file per service: "<pid> <starttime> <state dir>".
registry_file() { printf '%s/pids/%s' "$CACHE_DIR" "$1"; }

register_pid() {
  local svc="$1" pid="$2" start f
  start="$(proc_starttime "$pid")" || return 0
  f="$(registry_file "$svc")"
  mkdir -p "${f%/*}"
  printf '%s %s %s\n' "$pid" "$start" "$STACK_DIR" >"$f.tmp.$$"
  mv -f "$f.tmp.$$" "$f"
}

unregister_pid() { rm -f "$(registry_file "$1")"; }

# The state directory a service's data lives in, remembered machine-wide ("<registry>.dir") at each start. A
# service stopped from one clone and started again from another (CI's fresh clone restarting the broker) must
# come back with its data, not with an empty directory of the other clone.
remember_state_dir() {
  local f
  f="$(registry_file "$1").dir"
  mkdir -p "${f%/*}"
  printf '%s\n' "$STACK_DIR" >"$f"
}

# remembered_state_dir SERVICE: print the state dir the service last ran with, if that directory still exists.
remembered_state_dir() {
  local f dir
  f="$(registry_file "$1").dir"
  [[ -f "$f" ]] || return 1
  read -r dir <"$f" || return 1
  [[ -n "$dir" && -d "$dir/data/$1" ]] || return 1
  printf '%s' "$dir"
}

# registered_pid SERVICE PATTERN: print "<pid> <state dir>" of the registered, still-running process.
registered_pid() {
  local svc="$1" pattern="$2" f pid start dir
  f="$(registry_file "$svc")"
  [[ -f "$f" ]] || return 1
  read -r pid start dir <"$f" || true
  if [[ "$pid" =~ ^[0-9]+$ ]] && pid_matches "$pid" "$pattern" && [[ "$(proc_starttime "$pid")" == "$start" ]]; then
    printf '%s %s' "$pid" "$dir"
    return 0
  fi
  rm -f "$f"
  return 1
}

# managed_pid SERVICE PATTERN: print the pid of the live process the scripts started for SERVICE (from this
# state directory's pidfile, or from the machine-wide registry). Stale entries are removed.
managed_pid() {
  local svc="$1" pattern="$2" f pid reg
  f="$(pidfile_of "$svc")"
  if pid="$(pid_from_file "$f")"; then
    if pid_matches "$pid" "$pattern"; then
      printf '%s' "$pid"
      return 0
    fi
    rm -f "$f"
  fi
  reg="$(registered_pid "$svc" "$pattern")" || return 1
  printf '%s' "${reg%% *}"
}

# managed_dir SERVICE PATTERN: the state directory the managed process was started from.
managed_dir() {
  local reg
  if reg="$(registered_pid "$1" "$2")"; then
    printf '%s' "${reg#* }"
  else
    printf '%s' "$STACK_DIR"
  fi
}

# stop_pid NAME PID SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL.
stop_pid() {
  local name="$1" pid="$2" secs="$3"
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + secs))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      warn "$name (pid $pid) did not stop within ${secs}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
}
