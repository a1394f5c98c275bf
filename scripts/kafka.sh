# shellcheck shell=bash
# Apache Kafka brokers (KRaft, combined broker/controller), used by scripts/stack.sh for the local broker and by
# the drills for clusters of their own. Source it after lib.sh, do not run it.

# kafka_configure DIR NODE_ID PORT CONTROLLER_PORT VOTERS [KEY=VALUE...]: write DIR/server.properties and
# DIR/log4j2.properties for one node. VOTERS is controller.quorum.voters (e.g. "1@127.0.0.1:9093"). Extra
# KEY=VALUE lines (rack, replication defaults of a cluster) are appended.
kafka_configure() {
  local dir="$1" node="$2" port="$3" cport="$4" voters="$5"
  shift 5
  mkdir -p "$dir/log"
  {
    echo "# written by scripts/kafka.sh; rewritten at every start"
    echo "process.roles=broker,controller"
    echo "node.id=$node"
    echo "controller.quorum.voters=$voters"
    echo "listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$cport"
    echo "advertised.listeners=PLAINTEXT://$HOST:$port"
    echo "controller.listener.names=CONTROLLER"
    echo "inter.broker.listener.name=PLAINTEXT"
    echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    echo "log.dirs=$dir/log"
    # Topics are created by the application with their own settings (kafka.* in config/default.toml).
    echo "auto.create.topics.enable=false"
    # A test joins a new group every few seconds: no 3 s wait for more members before the first assignment.
    echo "group.initial.rebalance.delay.ms=0"
    # Fewer partitions for the internal offsets topic than the default 50: one small machine.
    echo "offsets.topic.num.partitions=10"
    echo "num.network.threads=2"
    echo "num.io.threads=4"
    printf '%s\n' "$@"
  } >"$dir/server.properties"
  cat >"$dir/log4j2.properties" <<'PROPS'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
PROPS
}

# kafka_java DIR: the broker's command line (bounded heap, G1 with short pauses).
kafka_java() {
  local dir="$1"
  printf '%s\n' "$JAVA_BIN" "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "-Dlog4j2.configurationFile=$dir/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties"
}

# kafka_format DIR CLUSTER_ID: format the node's storage once (KRaft); a formatted directory is kept.
kafka_format() {
  local dir="$1" cluster="$2"
  [[ -f "$dir/log/meta.properties" ]] && return 0
  "$JAVA_BIN" -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$KAFKA_HOME/libs/*" \
    kafka.tools.StorageTool format --ignore-formatted -t "$cluster" -c "$dir/server.properties" \
    >>"$dir/format.log" 2>&1 || {
    tail -n 20 "$dir/format.log" >&2
    die "kafka: formatting $dir failed (see $dir/format.log)"
  }
}

# kafka_cluster_id DIR: a cluster id kept in DIR/cluster.id (made once; KRaft ids are 22-char base64 uuids).
kafka_cluster_id() {
  local dir="$1"
  if [[ ! -s "$dir/cluster.id" ]]; then
    mkdir -p "$dir"
    "$JAVA_BIN" -cp "$KAFKA_HOME/libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1 >"$dir/cluster.id"
  fi
  cat "$dir/cluster.id"
}

# kafka_launch DIR PIDFILE LOG: start the configured node in its own session (it survives make and CI shells).
kafka_launch() {
  local dir="$1" pidfile="$2" log="$3" cmd
  mapfile -t cmd < <(kafka_java "$dir")
  printf '=== %s: %s\n' "$(date -Is)" "${cmd[*]}" >>"$log"
  rm -f "$pidfile"
  (
    cd "$dir"
    # shellcheck disable=SC2016 # $$ and $1 expand in the launcher shell
    exec setsid bash -c 'echo $$ >"$1"; shift; exec nohup "$@"' kafka-launch "$pidfile" "${cmd[@]}"
  ) </dev/null >>"$log" 2>&1 9>&- &
}

# kafka_wait NAME PORT PIDFILE LOG SECONDS: wait until the node accepts connections and says it started.
kafka_wait() {
  local name="$1" port="$2" pidfile="$3" log="$4" secs="$5" pid="" deadline=$((SECONDS + $5))
  while :; do
    # "started" must follow the last launch line of the log, not an earlier run's.
    if tcp_open "$port" && awk '/^=== /{found=0} /Kafka Server started/{found=1} END{exit !found}' "$log"; then
      return 0
    fi
    [[ -n "$pid" ]] || pid="$(pid_from_file "$pidfile" || true)"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$log" >&2 || true
      rm -f "$pidfile"
      die "$name: broker exited during start-up (see $log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$log" >&2 || true
      [[ -n "$pid" ]] && stop_pid "$name" "$pid" 10
      rm -f "$pidfile"
      die "$name: not answering on $HOST:$port after ${secs}s; stopped it again (see $log)"
    fi
    sleep 0.3
  done
}
