#!/usr/bin/env bash
# A private Apache Kafka cluster (KRaft, every node a combined broker/controller) for the benchmarks and the
# drills, apart from the stack's broker: its own directory, its own ports, stopped with it.
#
#   kafka-cluster.sh up DIR NODES BASE_PORT [RACK...]   start NODES nodes, those not running (node i: port BASE_PORT+2(i-1), its
#                                                       controller on the next port; rack i from the list)
#   kafka-cluster.sh brokers DIR                        print the bootstrap list
#   kafka-cluster.sh start-node DIR I                   start node I again (same storage)
#   kafka-cluster.sh stop-node DIR I [--kill]           SIGTERM node I (SIGKILL with --kill), wait for it to exit
#   kafka-cluster.sh down DIR                           stop every node
#
# With three nodes or more the cluster defaults are production-like: replication factor 3 and
# min.insync.replicas 2 for the internal topics (the application sets its topic's own, kafka.* in config).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/kafka.sh
source "$SCRIPTS_DIR/kafka.sh"

KAFKA_HEAP="${MEMBER_KAFKA_HEAP:-384m}"

load_env() {
  [[ -f "$1/cluster.env" ]] || die "kafka-cluster: no cluster in $1 (run 'up' first)"
  # shellcheck disable=SC1091
  source "$1/cluster.env"
}

node_port() { echo $((BASE_PORT + 2 * ($1 - 1))); }

start_node() {
  local dir="$1" i="$2" node_dir port rf isr rack
  node_dir="$dir/node-$i"
  port="$(node_port "$i")"
  rf=$((NODES < 3 ? NODES : 3))
  isr=$((NODES < 2 ? 1 : 2))
  local voters="" n
  for ((n = 1; n <= NODES; n++)); do
    voters+="${voters:+,}$n@$HOST:$(($(node_port "$n") + 1))"
  done
  local extra=(
    "offsets.topic.replication.factor=$rf" "transaction.state.log.replication.factor=$rf"
    "transaction.state.log.min.isr=$isr" "share.coordinator.state.topic.replication.factor=$rf"
    "share.coordinator.state.topic.min.isr=$isr" "default.replication.factor=$rf" "min.insync.replicas=$isr"
  )
  rack="$(echo "${RACKS:-}" | cut -d' ' -f"$i")"
  [[ -n "$rack" ]] && extra+=("broker.rack=$rack")
  kafka_configure "$node_dir" "$i" "$port" $((port + 1)) "$voters" "${extra[@]}"
  kafka_format "$node_dir" "$CLUSTER_ID"
  kafka_launch "$node_dir" "$node_dir/kafka.pid" "$node_dir/kafka.log"
}

running() {
  local pid
  pid="$(pid_from_file "$1/node-$2/kafka.pid")" || return 1
  pid_matches "$pid" kafka.Kafka
}

wait_node() {
  local dir="$1" i="$2"
  kafka_wait "kafka-node-$i" "$(node_port "$i")" "$dir/node-$i/kafka.pid" "$dir/node-$i/kafka.log" \
    "${MEMBER_STACK_TIMEOUT:-120}"
}

stop_node() {
  local dir="$1" i="$2" signal="${3:-}" pid
  pid="$(pid_from_file "$dir/node-$i/kafka.pid")" || return 0
  pid_matches "$pid" kafka.Kafka || return 0
  if [[ "$signal" == --kill ]]; then
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  else
    stop_pid "kafka-node-$i" "$pid" 60
  fi
  rm -f "$dir/node-$i/kafka.pid"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up)
    [[ $# -ge 3 ]] || die "usage: kafka-cluster.sh up DIR NODES BASE_PORT [RACK...]"
    dir="$1" nodes="$2" base="$3"
    shift 3
    "$SCRIPTS_DIR/install-kafka.sh" >/dev/null
    ensure_java
    mkdir -p "$dir"
    [[ -f "$dir/cluster.env" ]] || printf 'NODES=%s\nBASE_PORT=%s\nCLUSTER_ID=%s\nRACKS="%s"\n' \
      "$nodes" "$base" "$(kafka_cluster_id "$dir")" "$*" >"$dir/cluster.env"
    load_env "$dir"
    # A node that already runs is left as it is (`up` again resumes a partly stopped cluster).
    for ((i = 1; i <= NODES; i++)); do
      running "$dir" "$i" || start_node "$dir" "$i"
    done
    for ((i = 1; i <= NODES; i++)); do wait_node "$dir" "$i"; done
    info "kafka cluster: $NODES node(s) answering in $dir"
    ;;
  brokers)
    load_env "$1"
    list=""
    for ((i = 1; i <= NODES; i++)); do list+="${list:+,}$HOST:$(node_port "$i")"; done
    echo "$list"
    ;;
  start-node)
    load_env "$1"
    ensure_java
    start_node "$1" "$2"
    wait_node "$1" "$2"
    ;;
  stop-node)
    load_env "$1"
    stop_node "$1" "$2" "${3:-}"
    ;;
  down)
    # Every node at once: stopped one by one, the last ones wait for a controller quorum that is gone.
    load_env "$1"
    for ((i = 1; i <= NODES; i++)); do stop_node "$1" "$i" &  done
    wait
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 64
    ;;
esac
