#!/usr/bin/env bash
# `make drill-kafka`: the broker-loss drill. Three private Kafka brokers (scripts/kafka-cluster.sh; replication
# factor 3, min.insync.replicas 2, acks=all), the release `member run` over an isolated environment, a steady
# command load; one broker SIGKILLed under the load and started again; then every acknowledged write is looked
# for in the event store, on the topic and in every store (`member verify`). Appends a dated section to
# docs/benchmarks.md. DRILL_PHASE_SECONDS (default 10) sets the length of each phase.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

main() {
  bench_tools
  "$REPO_DIR/scripts/stack.sh" up
  bench_build
  mkdir -p "$BENCH_WORK"
  bench_facts "$BENCH_WORK/facts.md"
  (cd "$REPO_DIR" && "$BENCH_BIN" drill-kafka --phase-seconds "${DRILL_PHASE_SECONDS:-10}" \
    --kafka-cluster-script "$REPO_DIR/scripts/kafka-cluster.sh" \
    --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC")
  bench_info "drill-kafka section appended to $BENCH_DOC"
}

main "$@"
