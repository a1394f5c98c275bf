# shellcheck shell=bash
# Shared by scripts/bench.sh and scripts/drill.sh: tools, the release build, and the machine facts
# written at the top of each dated section of docs/benchmarks.md. Source it, do not run it.

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

bench_info() { printf '[bench] %s\n' "$*"; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO_DIR/target}"
MEMBER_BIN="$CARGO_TARGET_DIR/release/member"
BENCH_BIN="$CARGO_TARGET_DIR/release/member-bench"
BENCH_WORK="$CARGO_TARGET_DIR/bench"
BENCH_DOC="${BENCH_DOC:-$REPO_DIR/docs/benchmarks.md}"

# wrk (HTTP load) from Debian, idempotently; pgbench comes with the PostgreSQL the stack installs.
bench_tools() {
  ensure_dirs
  ensure_cmd wrk wrk
  command -v pgbench >/dev/null 2>&1 || die "pgbench is missing (it ships with PostgreSQL; run make stack-up)"
}

# BENCH_PROFILE=1: perf (linux-perf) for every process, async-profiler inside the JVMs (from Maven Central,
# cached under CACHE_DIR), and jcmd to load it; exports what member-bench's profile module reads.
ASYNC_PROFILER_VERSION="${ASYNC_PROFILER_VERSION:-4.1}"
bench_profile_tools() {
  case "${BENCH_PROFILE:-0}" in
    0 | "") return 0 ;;
    1) ;;
    *) die "BENCH_PROFILE must be 0 or 1, not '${BENCH_PROFILE}'" ;;
  esac
  ensure_cmd perf linux-perf
  ensure_cmd unzip unzip
  ensure_java
  # jcmd of the JDK the stack's JVMs run on (the attach protocol is the JVM's own).
  BENCH_JCMD="$(dirname "$(readlink -f "$JAVA_BIN")")/jcmd"
  if [[ ! -x "$BENCH_JCMD" && "$JAVA_BIN" == /usr/lib/jvm/java-17-openjdk-amd64/* ]]; then
    apt_install openjdk-17-jdk-headless
  fi
  [[ -x "$BENCH_JCMD" ]] || die "no jcmd beside $JAVA_BIN (install that JDK's jcmd to profile its JVMs)"
  export BENCH_JCMD
  local dir="$CACHE_DIR/async-profiler-$ASYNC_PROFILER_VERSION" jar
  if [[ ! -f "$dir/linux-x64/libasyncProfiler.so" ]]; then
    ensure_cmd mvn maven
    bench_info "fetching async-profiler $ASYNC_PROFILER_VERSION from Maven Central"
    mkdir -p "$dir"
    timeout "$APT_TIMEOUT" mvn -B -q dependency:copy \
      -Dartifact="tools.profiler:async-profiler:$ASYNC_PROFILER_VERSION" -DoutputDirectory="$dir" \
      || die "async-profiler: mvn dependency:copy failed"
    jar="$dir/async-profiler-$ASYNC_PROFILER_VERSION.jar"
    unzip -o -q "$jar" 'linux-x64/libasyncProfiler.so' -d "$dir" || die "async-profiler: no linux-x64 library in $jar"
  fi
  export BENCH_ASYNC_PROFILER="$dir/linux-x64/libasyncProfiler.so"
  export BENCH_PROFILE_DIR="$BENCH_WORK/profiles/$(date -u +%Y%m%d-%H%M%S)"
  mkdir -p "$BENCH_PROFILE_DIR"
  bench_info "profiling every timed step into $BENCH_PROFILE_DIR (perf -a; async-profiler in the JVMs)"
}

bench_build() {
  bench_info "cargo build --release (member, member-bench)"
  (cd "$REPO_DIR" && cargo build --release -p member-api --bin member -p member-bench --bin member-bench)
}

# bench_facts FILE: machine facts, service versions and what else was running, as markdown.
bench_facts() {
  local f="$1" pg maria redis load others
  pg="$(PGPASSWORD="$DB_PASSWORD" psql -h "$HOST" -p "$PG_PORT" -U "$DB_USER" -d postgres -tAc 'SHOW server_version' 2>/dev/null || echo '?')"
  maria="$(mariadb --protocol=tcp -h "$HOST" -P "$MARIADB_PORT" -u"$DB_USER" -p"$DB_PASSWORD" -N -e 'SELECT VERSION()' 2>/dev/null || echo '?')"
  redis="$(redis-server --version 2>/dev/null | sed -n 's/.*v=\([^ ]*\).*/\1/p')"
  load="$(cut -d' ' -f1-3 /proc/loadavg)"
  others="$(ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 > 5 {printf "%s %s%%, ", $2, $1}' | sed 's/, $//')"
  mkdir -p "$(dirname "$f")"
  {
    echo "- machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
    echo "- services: PostgreSQL $pg, MariaDB $maria, Redis $redis, Apache Kafka $KAFKA_VERSION (Java $("$(command -v java)" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)); $(rustc --version 2>/dev/null); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "- code: $(git -C "$REPO_DIR" rev-parse --short HEAD)$(git -C "$REPO_DIR" diff --quiet || echo ' (uncommitted changes)') on branch $(git -C "$REPO_DIR" rev-parse --abbrev-ref HEAD), release build"
    echo "- load before the run: $load (1/5/15 min); busy processes: ${others:-none above 5% CPU}"
    echo "- load generators (wrk, pgbench, member-bench) run on the same machine as the servers"
  } >"$f"
}

# The benchmarks' own Elasticsearch indices and templates (`member_b_*`) that an interrupted run left
# on the three local clusters: each run drops its own, but a killed one cannot.
bench_drop_leftover_indices() {
  local port es n
  for port in 9200 9201 9202; do
    es="http://127.0.0.1:$port"
    n="$(curl -s -m 30 "$es/_cat/indices/member_b_*?h=index" 2>/dev/null | grep -c . || true)"
    if ((n > 0)); then
      bench_info "dropping $n leftover benchmark index(es) on $es"
      curl -s -m 120 -o /dev/null -XDELETE "$es/member_b_*?expand_wildcards=all" || true
    fi
    curl -s -m 60 -o /dev/null -XDELETE "$es/_index_template/member_b_*" || true
  done
}
