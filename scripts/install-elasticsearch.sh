#!/usr/bin/env bash
# Install Elasticsearch (pinned 8.x) from Maven Central into the cache outside the clone:
#   $MEMBER_CACHE_DIR/elasticsearch-<version>/libs/*.jar      server, libraries, transport-netty4 module
#   $MEMBER_CACHE_DIR/elasticsearch-<version>/classes/         the launcher (scripts/elasticsearch/src), compiled
# The jars are resolved by Maven from scripts/elasticsearch/pom.xml (`dependency:copy-dependencies`). Idempotent:
# does nothing when the complete set is there. A lock in the cache directory makes concurrent runs (two clones,
# CI) wait for one install instead of installing twice.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/elasticsearch.sh
source "$SCRIPTS_DIR/elasticsearch.sh"

if es_installed; then
  info "elasticsearch: $ES_VERSION already installed at $ES_HOME"
  exit 0
fi

ensure_dirs
mkdir -p "$CACHE_DIR"
ensure_java
ensure_cmd mvn maven
JAVAC="$(dirname "$JAVA_BIN")/javac"
if [[ ! -x "$JAVAC" ]]; then
  apt_install openjdk-17-jdk-headless
  JAVAC=/usr/lib/jvm/java-17-openjdk-amd64/bin/javac
fi

exec 8>"$CACHE_DIR/elasticsearch-$ES_VERSION.lock"
if ! flock -n 8; then
  info "elasticsearch: another process is installing Elasticsearch $ES_VERSION; waiting for it"
  flock -w "$LOCK_TIMEOUT" 8 || die "elasticsearch: timed out waiting for the install lock"
fi
if es_installed; then
  info "elasticsearch: $ES_VERSION installed at $ES_HOME (by another process)"
  exit 0
fi

log="$CACHE_DIR/elasticsearch-install.log"
staging="$ES_HOME.staging.$$"
rm -rf "$staging"
info "elasticsearch: resolving Elasticsearch $ES_VERSION from Maven Central (log: $log)"
started=$SECONDS
if ! timeout "$APT_TIMEOUT" mvn -B -q -f "$SCRIPTS_DIR/elasticsearch/pom.xml" \
  -Delasticsearch.version="$ES_VERSION" dependency:copy-dependencies -DincludeScope=runtime \
  -DoutputDirectory="$staging/libs" </dev/null >"$log" 2>&1; then
  tail -n 30 "$log" >&2 || true
  rm -rf "$staging"
  die "elasticsearch: mvn dependency:copy-dependencies failed (full log: $log)"
fi
mapfile -t sources < <(find "$SCRIPTS_DIR/elasticsearch/src" -name '*.java' | sort)
if ! "$JAVAC" -nowarn -encoding UTF-8 -d "$staging/classes" -cp "$staging/libs/*" "${sources[@]}" >>"$log" 2>&1; then
  tail -n 30 "$log" >&2 || true
  rm -rf "$staging"
  die "elasticsearch: compiling the launcher failed (full log: $log)"
fi
rm -rf "$ES_HOME"
mv "$staging" "$ES_HOME"
touch "$ES_HOME/.complete"
info "elasticsearch: installed $ES_VERSION in $((SECONDS - started))s at $ES_HOME"
