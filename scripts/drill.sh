#!/usr/bin/env bash
# `make drill`: the fail-over drill under order-class load against the release `member run` over an
# isolated environment: Redis A (private, behind a proxy) stopped, a search-primary outage injected,
# MariaDB (behind a proxy) stopped, the broker restarted, then everything restored. Appends a dated
# section to docs/benchmarks.md. DRILL_PHASE_SECONDS (default 8) sets the length of each phase.
#
# The broker restart stops the shared tansu broker for a few seconds: other clients of it (tests
# running in another clone) see a broker outage too.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

main() {
  bench_tools
  "$REPO_DIR/scripts/stack.sh" up
  bench_build
  mkdir -p "$BENCH_WORK"
  bench_facts "$BENCH_WORK/facts.md"
  (cd "$REPO_DIR" && "$BENCH_BIN" drill --phase-seconds "${DRILL_PHASE_SECONDS:-8}" \
    --stack-script "$REPO_DIR/scripts/stack.sh" \
    --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC")
  bench_info "drill section appended to $BENCH_DOC"
}

main "$@"
