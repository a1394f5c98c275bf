#!/usr/bin/env bash
# `make run-centers`: the two-center topology on this machine (docs/operations/centers.md, ADR 0039).
#   - the event store: scripts/pg-ha.sh in PG_HA_DIR (A, B and the witness in network namespaces);
#   - Kafka: three brokers on racks a, b and w (scripts/kafka-cluster.sh in $MEMBER_STACK_DIR/kafka-centers,
#     ports from KAFKA_CENTERS_PORT), the topic with replication factor 3 and min.insync.replicas 2;
#   - center A: `member run` with config/centers/a.toml on 127.0.10.1 (:8080 commands, :8081 queries), its
#     postgres.url A's HAProxy; center B: config/centers/b.toml on 127.0.20.1, B's HAProxy.
# Each center's `member run` is a process group of its own (logs in $MEMBER_STACK_DIR/logs/center-*.log).
# Ctrl-C stops both; the event store and the brokers keep running (make pg-ha-down; kafka-cluster.sh down DIR).
# MEMBER_BIN runs a given binary without building. Needs root (network namespaces).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_HA_DIR="${PG_HA_DIR:-$STACK_DIR/pg-ha}"
PG_HA_PORT="${PG_HA_PORT:-25400}"
KAFKA_DIR="$STACK_DIR/kafka-centers"
KAFKA_CENTERS_PORT="${KAFKA_CENTERS_PORT:-29092}"
# MEMBER_BIN: run this binary as it is (no build); by default the release build, built first.
MEMBER_BIN="${MEMBER_BIN:-}"

[[ "$(id -u)" -eq 0 ]] || die "run-centers: network namespaces need root"
mkdir -p "$LOG_DIR"
"$SCRIPTS_DIR/pg-ha.sh" up "$PG_HA_DIR" "$PG_HA_PORT"
"$SCRIPTS_DIR/kafka-cluster.sh" up "$KAFKA_DIR" 3 "$KAFKA_CENTERS_PORT" a b w
brokers="$("$SCRIPTS_DIR/kafka-cluster.sh" brokers "$KAFKA_DIR")"
if [[ -z "$MEMBER_BIN" ]]; then
  (cd "$REPO_DIR" && cargo build --release -p member-api --bin member)
  MEMBER_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/member"
fi

pids=()
stop_centers() {
  local pid
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  wait || true
}
trap stop_centers INT TERM EXIT

for c in a b; do
  # setsid: the center's processes are one group, killed together (`kill -- -PGID`).
  (cd "$REPO_DIR" && exec setsid env MEMBER_CONFIG="$REPO_DIR/config/centers/$c.toml" \
    MEMBER__POSTGRES__URL="$("$SCRIPTS_DIR/pg-ha.sh" url "$PG_HA_DIR" "$c")" \
    MEMBER__KAFKA__BROKERS="$brokers" "$MEMBER_BIN" run >>"$LOG_DIR/center-$c.log" 2>&1) &
  pids+=("$!")
  info "center $c: member run (process group $!), log $LOG_DIR/center-$c.log"
done
info "center A: http://127.0.10.1:8080 (commands), http://127.0.10.1:8081 (queries)"
info "center B: http://127.0.20.1:8080 (commands), http://127.0.20.1:8081 (queries)"
info "event store: $("$SCRIPTS_DIR/pg-ha.sh" patronictl "$PG_HA_DIR" list 2>/dev/null | grep -c running) node(s) running; brokers $brokers"
wait -n "${pids[@]}"
