#!/usr/bin/env bash
# `make drill-centers`: the loss of center A (issue 22, docs/operations/centers.md). The two-center
# event store (scripts/pg-ha.sh: Patroni + etcd + HAProxy, A, B and the witness in network namespaces), three
# private Kafka brokers on racks a, b and w (scripts/kafka-cluster.sh; replication factor 3,
# min.insync.replicas 2, acks=all), and a release `member run` per center with its own Redis, search clusters
# and MySQL databases. Under order-class reads on B's query API and writes through B's command API, all of
# center A is SIGKILLed, the load goes on, A is brought back and caught up. The last line of the output is a
# JSON object with the figures; a dated section goes to docs/benchmarks.md. Needs root (network namespaces).
# DRILL_PHASE_SECONDS (default 10) sets the length of each phase.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

main() {
  [[ "$(id -u)" -eq 0 ]] || die "drill-centers: network namespaces need root"
  bench_tools
  "$REPO_DIR/scripts/stack.sh" up
  bench_build
  mkdir -p "$BENCH_WORK"
  bench_facts "$BENCH_WORK/facts.md"
  (cd "$REPO_DIR" && "$BENCH_BIN" drill-centers --phase-seconds "${DRILL_PHASE_SECONDS:-10}" \
    --pg-ha-script "$REPO_DIR/scripts/pg-ha.sh" \
    --kafka-cluster-script "$REPO_DIR/scripts/kafka-cluster.sh" \
    --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC")
}

main "$@"
