#!/usr/bin/env bash
# Install Apache Kafka (pinned, KRaft) from Maven Central into the cache outside the clone:
#   $MEMBER_CACHE_DIR/kafka-<version>/libs/*.jar   (default cache: $HOME/.cache/member-stack)
# The jars are resolved by Maven from scripts/kafka/pom.xml (`dependency:copy-dependencies`); nothing is built.
# Idempotent: does nothing when the complete set is there. A lock in the cache directory makes concurrent runs
# (two clones, CI) wait for one download instead of downloading twice.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kafka_installed() {
  [[ -f "$KAFKA_HOME/.complete" && -f "$KAFKA_HOME/libs/kafka_2.13-$KAFKA_VERSION.jar" ]]
}

if kafka_installed; then
  info "kafka: $KAFKA_VERSION already installed at $KAFKA_HOME"
  exit 0
fi

ensure_dirs
mkdir -p "$CACHE_DIR"
ensure_java
ensure_cmd mvn maven

exec 8>"$CACHE_DIR/kafka-$KAFKA_VERSION.lock"
if ! flock -n 8; then
  info "kafka: another process is installing Kafka $KAFKA_VERSION; waiting for it"
  flock -w "$LOCK_TIMEOUT" 8 || die "kafka: timed out waiting for the install lock"
fi
if kafka_installed; then
  info "kafka: $KAFKA_VERSION installed at $KAFKA_HOME (by another process)"
  exit 0
fi

log="$CACHE_DIR/kafka-install.log"
staging="$KAFKA_HOME.staging.$$"
rm -rf "$staging"
info "kafka: resolving Apache Kafka $KAFKA_VERSION from Maven Central (log: $log)"
started=$SECONDS
if ! timeout "$APT_TIMEOUT" mvn -B -q -f "$SCRIPTS_DIR/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$staging/libs" \
  </dev/null >"$log" 2>&1; then
  tail -n 30 "$log" >&2 || true
  rm -rf "$staging"
  die "kafka: mvn dependency:copy-dependencies failed (full log: $log)"
fi
rm -rf "$KAFKA_HOME"
mv "$staging" "$KAFKA_HOME"
touch "$KAFKA_HOME/.complete"
info "kafka: installed $KAFKA_VERSION in $((SECONDS - started))s at $KAFKA_HOME"
