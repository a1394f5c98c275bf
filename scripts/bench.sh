#!/usr/bin/env bash
# `make bench`: the benchmarks of docs/benchmarks.md, each against its baseline in the same run,
# over fresh databases, topics and private Redis servers (never the developer's data). Appends a
# dated section to docs/benchmarks.md.
#
#   BENCH=all (default) | comma-separated subset of: commands, query, relay, projectors, freshness, sinks, crypto, rebuild
#   BENCH_SECONDS=10    seconds per timed step (about 8 minutes in all at 10)
#   BENCH_REBUILD_MEMBERS=1000000
#   BENCH_PROFILE=1     flame graphs of every timed step (perf -a, async-profiler in the JVMs) under
#                       target/bench/profiles/, and a note per step naming where the time went
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

BENCH="${BENCH:-all}"
BENCH_SECONDS="${BENCH_SECONDS:-10}"
BENCH_REBUILD_MEMBERS="${BENCH_REBUILD_MEMBERS:-1000000}"

wants() { [[ "$BENCH" == all || ",$BENCH," == *",$1,"* ]]; }

# ---------------------------------------------------------------------------------------------------------------
# The rebuild benchmark: 1,000,000 members seeded in bulk, then rebuilt into all six stores. It needs
# `member seed --bulk` and `member rebuild`, built on other branches; until they are merged it is skipped with
# the reason printed. Enable by merging them; nothing else changes here.
bench_rebuild() {
  if ! "$MEMBER_BIN" rebuild --help >/dev/null 2>&1; then
    bench_info "rebuild: skipped: \`member rebuild\` does not exist in this build yet"
    return 0
  fi
  if ! "$MEMBER_BIN" seed --help 2>/dev/null | grep -q -- '--bulk'; then
    bench_info "rebuild: skipped: \`member seed --bulk\` does not exist in this build yet"
    return 0
  fi
  bench_info "rebuild: seed $BENCH_REBUILD_MEMBERS members in bulk, then rebuild --target all (timed)"
  "$BENCH_BIN" rebuild --members "$BENCH_REBUILD_MEMBERS" \
    --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC"
}

main() {
  bench_tools
  "$REPO_DIR/scripts/stack.sh" up
  bench_profile_tools
  bench_build
  bench_drop_leftover_indices
  mkdir -p "$BENCH_WORK"
  bench_facts "$BENCH_WORK/facts.md"
  local only="$BENCH"
  only="${only//,rebuild/}"
  only="${only//rebuild,/}"
  if [[ "$only" != rebuild ]]; then
    # A private broker on fresh storage (BENCH_BROKER=shared: the stack's broker).
    local broker=(--kafka-cluster-script "$REPO_DIR/scripts/kafka-cluster.sh")
    [[ "${BENCH_BROKER:-private}" == shared ]] && broker=()
    bench_info "running: $BENCH_BIN run --only $only --seconds $BENCH_SECONDS ${broker[*]}"
    (cd "$REPO_DIR" && "$BENCH_BIN" run --only "$only" --seconds "$BENCH_SECONDS" "${broker[@]}" \
      --member-bin "$MEMBER_BIN" --work-dir "$BENCH_WORK" --facts "$BENCH_WORK/facts.md" --doc "$BENCH_DOC")
  fi
  if wants rebuild; then
    bench_rebuild
  fi
  bench_info "results appended to $BENCH_DOC"
}

main "$@"
