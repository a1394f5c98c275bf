# shellcheck shell=bash
# Elasticsearch 8 nodes of the local stack: search-primary (127.0.0.1:9200), search-backup (9201) and
# search-marketing (9202), each a single-node cluster in its own JVM with a bounded heap, security off, bound to
# loopback. Used by scripts/stack.sh (and scripts/install-elasticsearch.sh). Source it after lib.sh, do not run it.
#
# Environment knobs (optional):
#   MEMBER_ES_HEAP   the heap of each node's JVM   (default: 512m)
#   MEMBER_ES_JAVA_OPTS  more JVM options for each node, space-separated (default: none)

ES_VERSION="8.14.3"
ES_HOME="$CACHE_DIR/elasticsearch-$ES_VERSION"
ES_HEAP="${MEMBER_ES_HEAP:-512m}"
ES_SERVICES=(search-primary search-backup search-marketing)

es_installed() {
  [[ -f "$ES_HOME/.complete" && -f "$ES_HOME/libs/elasticsearch-$ES_VERSION.jar" &&
    -f "$ES_HOME/classes/org/elasticsearch/node/LocalStackNode.class" ]]
}

# es_http_port SERVICE / es_transport_port SERVICE
es_http_port() {
  case "$1" in
    search-primary) echo 9200 ;;
    search-backup) echo 9201 ;;
    search-marketing) echo 9202 ;;
    *) die "unknown search service '$1' (known: ${ES_SERVICES[*]})" ;;
  esac
}
es_transport_port() { echo $(($(es_http_port "$1") + 100)); }

# What the command line of the node's JVM contains (one property per service: three JVMs run the same class).
es_pattern() { printf -- '-Dmember.service=%s' "$1"; }

# es_answers SERVICE: the cluster answers and its health is at least yellow.
es_answers() {
  local body
  body="$(curl -s -m 3 "http://$HOST:$(es_http_port "$1")/_cluster/health" 2>/dev/null)" || return 1
  [[ "$body" == *'"status":"green"'* || "$body" == *'"status":"yellow"'* ]]
}

# es_configure SERVICE HOME: write HOME/config/elasticsearch.yml and log4j2.properties (rewritten at every start).
es_configure() {
  local svc="$1" home="$2"
  mkdir -p "$home/config" "$home/data" "$home/logs"
  cat >"$home/config/elasticsearch.yml" <<YAML
# written by scripts/elasticsearch.sh; rewritten at every start
cluster.name: $svc
node.name: $svc
network.host: $HOST
http.port: $(es_http_port "$svc")
transport.port: $(es_transport_port "$svc")
discovery.type: single-node
path.data: $home/data
path.logs: $home/logs
# A development machine's disk is often mostly full: without this, Elasticsearch stops allocating shards at 85%
# and makes every index read-only at 95%, and tests fail for a reason that has nothing to do with them.
cluster.routing.allocation.disk.threshold_enabled: false
# Each test creates its own indices (member_t_*); scripts/clean-test-data.sh removes leftovers by wildcard.
action.destructive_requires_name: false
cluster.max_shards_per_node: 10000
YAML
  cat >"$home/config/log4j2.properties" <<'PROPS'
status = error
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.deprecation.name = org.elasticsearch.deprecation
logger.deprecation.level = error
PROPS
}

# es_java SERVICE HOME: the node's command line (bounded heap; the distribution's jvm.options essentials).
es_java() {
  local svc="$1" home="$2"
  printf '%s\n' "$JAVA_BIN" "$(es_pattern "$svc")" "-Xms$ES_HEAP" "-Xmx$ES_HEAP" -XX:+UseG1GC \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Djna.nosys=true \
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true -Des.set.netty.runtime.available.processors=false \
    "-Djava.io.tmpdir=$home/tmp"
  # Extra JVM options, one word each (e.g. a JIT experiment: -XX:TieredStopAtLevel=1).
  # Split on spaces only (no glob expansion of a `*` in an option).
  local opt opts=()
  read -r -a opts <<<"${MEMBER_ES_JAVA_OPTS:-}"
  for opt in "${opts[@]}"; do printf '%s\n' "$opt"; done
  printf '%s\n' -cp "$ES_HOME/classes:$ES_HOME/libs/*" org.elasticsearch.node.LocalStackNode "$home"
}

# up_elasticsearch SERVICE: start the node unless the cluster answers; wait until it is at least yellow.
up_elasticsearch() {
  local svc="$1" port
  port="$(es_http_port "$svc")"
  if es_answers "$svc"; then
    say_running "$svc"
    return 0
  fi
  if tcp_open "$port"; then
    die "$svc: something listens on $HOST:$port but is not a healthy Elasticsearch cluster"
  fi
  "$SCRIPTS_DIR/install-elasticsearch.sh"
  ensure_java
  ensure_cmd curl curl
  local home="$DATA_DIR/$svc" pidfile log="$LOG_DIR/$svc.log" started=$SECONDS cmd pid="" deadline
  pidfile="$(pidfile_of "$svc")"
  es_configure "$svc" "$home"
  mkdir -p "$home/tmp"
  mapfile -t cmd < <(es_java "$svc" "$home")
  info "$svc: starting Elasticsearch $ES_VERSION on $HOST:$port (heap $ES_HEAP, data: $home/data, log: $log)"
  printf '=== %s: %s\n' "$(date -Is)" "${cmd[*]}" >>"$log"
  rm -f "$pidfile"
  (
    cd "$home"
    # shellcheck disable=SC2016 # $$ and $1 expand in the launcher shell
    exec setsid bash -c 'echo $$ >"$1"; shift; exec nohup "$@"' es-launch "$pidfile" "${cmd[@]}"
  ) </dev/null >>"$log" 2>&1 9>&- &
  deadline=$((SECONDS + STACK_TIMEOUT))
  until es_answers "$svc"; do
    [[ -n "$pid" ]] || pid="$(pid_from_file "$pidfile" || true)"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      rm -f "$pidfile"
      die "$svc: Elasticsearch exited during start-up (see $log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$log" >&2 || true
      [[ -n "$pid" ]] && stop_pid "$svc" "$pid" 30
      rm -f "$pidfile"
      die "$svc: not yellow on $HOST:$port after ${STACK_TIMEOUT}s; stopped it again (see $log)"
    fi
    sleep 0.5
  done
  info "$svc: yellow or green on $HOST:$port after $((SECONDS - started))s (pid $(register_started "$svc"))"
  remember_state_dir "$svc"
}
