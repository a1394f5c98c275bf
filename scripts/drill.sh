#!/usr/bin/env bash
# `make drill`: the fail-over drill under order-class load against the release `member run` over an
# isolated environment: Redis A (private, behind a proxy) stopped, a search-primary outage injected,
# MariaDB (behind a proxy) stopped, the broker restarted, then everything restored. Appends a dated
# section to docs/benchmarks.md. DRILL_PHASE_SECONDS (default 8) sets the length of each phase.
#
# The broker: by default a Kafka broker of the drill's own (scripts/kafka-cluster.sh: the same jars,
# its own storage and free ports), restarted in place. DRILL_BROKER=shared restarts the shared broker
# instead (`stack.sh restart-service kafka`): every other client of it (tests in other clones) sees the
# outage too, and the drill inherits whatever state that broker is in. DRILL_BROKER=none leaves the
# shared broker alone (the other phases only).
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

main() {
  bench_tools
  "$REPO_DIR/scripts/stack.sh" up
  bench_build
  mkdir -p "$BENCH_WORK"
  bench_facts "$BENCH_WORK/facts.md"
  local broker=(--kafka-cluster-script "$REPO_DIR/scripts/kafka-cluster.sh")
  case "${DRILL_BROKER:-private}" in
    shared) broker=(--shared-broker "$REPO_DIR/scripts/stack.sh") ;;
    none) broker=(--no-broker-restart) ;;
  esac
  (cd "$REPO_DIR" && "$BENCH_BIN" drill --phase-seconds "${DRILL_PHASE_SECONDS:-8}" "${broker[@]}" \
    --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC")
  bench_info "drill section appended to $BENCH_DOC"
}

main "$@"
