#!/usr/bin/env bash
# Drops the databases that earlier test runs left behind: PostgreSQL `member_test_*` and MariaDB
# `member_t_*` (each test creates its own; a test that panics leaves its databases), and the
# Elasticsearch indices and templates `member_t_*` on the three local clusters. Never touches the
# databases `member` or `member_db_*`, nor the indices `member*` that `member run` uses.
set -euo pipefail

PG_URL="${MEMBER__POSTGRES__URL:-postgres://member:member@127.0.0.1:5432/member}"
MYSQL_ARGS=(-umember -pmember -h127.0.0.1 -P3306 --batch --skip-column-names)

dropped=0
while read -r db; do
  [[ -n "$db" ]] || continue
  timeout 30 psql "$PG_URL" -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  dropped=$((dropped + 1))
done < <(timeout 30 psql "$PG_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'member\_test\_%'")

while read -r db; do
  [[ -n "$db" ]] || continue
  timeout 30 mariadb "${MYSQL_ARGS[@]}" -e "DROP DATABASE IF EXISTS \`$db\`"
  dropped=$((dropped + 1))
done < <(timeout 30 mariadb "${MYSQL_ARGS[@]}" -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'member\\_t\\_%'")

# Elasticsearch: every test index and template is named member_t_<uuid>[...] (tests/src/elasticsearch.rs).
for port in 9200 9201 9202; do
  es="http://127.0.0.1:$port"
  curl -s -m 5 -o /dev/null "$es/_cluster/health" 2>/dev/null || continue
  n="$(curl -s -m 30 "$es/_cat/indices/member_t_*?h=index" 2>/dev/null | grep -c . || true)"
  if ((n > 0)); then
    curl -s -m 120 -o /dev/null -XDELETE "$es/member_t_*?expand_wildcards=all" || true
    dropped=$((dropped + n))
  fi
  curl -s -m 60 -o /dev/null -XDELETE "$es/_index_template/member_t_*" || true
done

echo "[stack] dropped $dropped leftover test database(s) and index(es)"
