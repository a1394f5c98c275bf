//! Writing a batch of records to the shards.
//!
//! The batch is compacted (newest document per member, newest entry per identity), grouped by
//! database and logical shard, and written as multi-row `INSERT ... ON DUPLICATE KEY UPDATE`
//! statements, one per table per shard (split in chunks of [`ROWS_PER_STATEMENT`] rows for very
//! large batches). The guards live in the statements, so the stored row wins against anything
//! that is not newer, whatever the order of delivery:
//!
//! ```sql
//! doc = IF(VALUES(version) > version, VALUES(doc), doc), ..., version = GREATEST(version, VALUES(version))
//! ```
//!
//! MySQL evaluates the assignments left to right, each seeing the columns as already updated,
//! so the guarded columns come first and `version` (the column they compare against) last.
//!
//! Each database gets one transaction for its part of the batch (autocommit when it is a single
//! statement), all databases in parallel; `apply` returns after every commit, so the batch is
//! durable (InnoDB with `innodb_flush_log_at_trx_commit = 1`). A deadlock or lock wait timeout
//! retries the transaction a few times; the writes are idempotent, so a retry, or a redelivery
//! after a partial failure across databases, is harmless.
//!
//! Values are always bound as parameters; only table names (validated identifiers) are part of
//! the SQL text.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::try_join_all;
use member_projections::{CompactBatch, MemberRecord, Sink, SinkError};
use sqlx::mysql::MySql;
use sqlx::{Acquire, MySqlConnection, QueryBuilder};
use uuid::Uuid;

use super::{error_number, to_sink_error, MysqlShards, RETRYABLE_ERRORS, TARGET};

/// At most this many rows per statement: 4 parameters per member row stays far below the
/// protocol's 65,535 placeholders, and 1,000 documents of a few KiB far below the default
/// `max_allowed_packet` (16 MiB).
pub const ROWS_PER_STATEMENT: usize = 1_000;

/// Attempts of one database's transaction when it deadlocks or times out waiting for a lock.
const LOCK_ATTEMPTS: u32 = 3;

/// A member row, ready to bind.
struct MemberRow {
    member_id: Uuid,
    version: u64,
    doc: String,
    updated_at: chrono::DateTime<chrono::Utc>,
}

/// An identity-index row, ready to bind.
struct IdentityRow {
    key: String,
    member_id: Option<Uuid>,
    generation: u64,
}

/// One database's part of a batch, by table (ascending shard, rows ascending by primary key).
#[derive(Default)]
struct DatabaseBatch {
    members: BTreeMap<String, Vec<MemberRow>>,
    identities: BTreeMap<String, Vec<IdentityRow>>,
    /// Entries an erased member left behind: deleted unless a later holder has them (one
    /// `DELETE` each; erasures are rare).
    erased: BTreeMap<String, Vec<IdentityRow>>,
}

impl DatabaseBatch {
    fn statements(&self) -> usize {
        let chunks = |n: usize| n.div_ceil(ROWS_PER_STATEMENT);
        self.members
            .values()
            .map(|r| chunks(r.len()))
            .sum::<usize>()
            + self
                .identities
                .values()
                .map(|r| chunks(r.len()))
                .sum::<usize>()
            + self.erased.values().map(Vec::len).sum::<usize>()
    }
}

impl MysqlShards {
    fn group(&self, batch: &CompactBatch<'_>) -> BTreeMap<usize, DatabaseBatch> {
        let mut by_db: BTreeMap<usize, DatabaseBatch> = BTreeMap::new();
        for doc in &batch.documents {
            let shard = self.map.shard_of_member(doc.member_id);
            by_db
                .entry(self.map.database_index_of(shard))
                .or_default()
                .members
                .entry(self.set.member_table(shard))
                .or_default()
                .push(MemberRow {
                    member_id: doc.member_id,
                    version: doc.version,
                    doc: serde_json::to_string(doc).expect("a member document always serializes"),
                    updated_at: doc.updated_at,
                });
        }
        for entry in &batch.identities {
            let shard = self.map.shard_of_identity(entry.key);
            by_db
                .entry(self.map.database_index_of(shard))
                .or_default()
                .identities
                .entry(self.set.identity_table(shard))
                .or_default()
                .push(IdentityRow {
                    key: entry.key.to_string(),
                    member_id: entry.member_id,
                    generation: entry.generation,
                });
        }
        for entry in &batch.erased {
            let shard = self.map.shard_of_identity(entry.key);
            by_db
                .entry(self.map.database_index_of(shard))
                .or_default()
                .erased
                .entry(self.set.identity_table(shard))
                .or_default()
                .push(IdentityRow {
                    key: entry.key.to_string(),
                    member_id: None,
                    generation: entry.generation,
                });
        }
        by_db
    }

    async fn write_database(&self, index: usize, batch: DatabaseBatch) -> Result<(), SinkError> {
        let mut attempt = 1;
        loop {
            match self.write_database_once(index, &batch).await {
                Err(e)
                    if attempt < LOCK_ATTEMPTS
                        && error_number(&e).is_some_and(|n| RETRYABLE_ERRORS.contains(&n)) =>
                {
                    tracing::warn!(
                        database = %self.map.databases()[index],
                        attempt,
                        "mysql batch hit a deadlock or lock timeout; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other.map_err(to_sink_error),
            }
        }
    }

    async fn write_database_once(
        &self,
        index: usize,
        batch: &DatabaseBatch,
    ) -> Result<(), sqlx::Error> {
        let mut conn = self.pools[index].acquire().await?;
        if batch.statements() == 1 {
            // One statement is atomic on its own: save the BEGIN and COMMIT round trips.
            return write_tables(&mut conn, batch).await;
        }
        let mut tx = conn.begin().await?;
        write_tables(&mut tx, batch).await?;
        tx.commit().await
    }
}

async fn write_tables(
    conn: &mut MySqlConnection,
    batch: &DatabaseBatch,
) -> Result<(), sqlx::Error> {
    for (table, rows) in &batch.members {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "INSERT INTO `{table}` (member_id, version, doc, updated_at) "
            ));
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.member_id)
                    .push_bind(row.version)
                    .push_bind(row.doc.as_str())
                    .push_bind(row.updated_at);
            });
            q.push(
                " ON DUPLICATE KEY UPDATE \
                 doc = IF(VALUES(version) > version, VALUES(doc), doc), \
                 updated_at = IF(VALUES(version) > version, VALUES(updated_at), updated_at), \
                 version = GREATEST(version, VALUES(version))",
            );
            q.build().execute(&mut *conn).await?;
        }
    }
    for (table, rows) in &batch.identities {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new(format!(
                "INSERT INTO `{table}` (identity_key, member_id, generation) "
            ));
            q.push_values(chunk, |mut b, row| {
                b.push_bind(row.key.as_str())
                    .push_bind(row.member_id)
                    .push_bind(row.generation);
            });
            q.push(
                " ON DUPLICATE KEY UPDATE \
                 member_id = IF(VALUES(generation) > generation, VALUES(member_id), member_id), \
                 generation = GREATEST(generation, VALUES(generation))",
            );
            q.build().execute(&mut *conn).await?;
        }
    }
    for (table, rows) in &batch.erased {
        for row in rows {
            sqlx::query(&format!(
                "DELETE FROM `{table}` WHERE identity_key = ? AND generation <= ?"
            ))
            .bind(row.key.as_str())
            .bind(row.generation)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

#[async_trait]
impl Sink for MysqlShards {
    fn target(&self) -> &str {
        TARGET
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        let batch = CompactBatch::of(records);
        if batch.is_empty() {
            return Ok(());
        }
        let (documents, identities) = (batch.documents.len(), batch.identities.len());
        let by_db = self.group(&batch);
        try_join_all(
            by_db
                .into_iter()
                .map(|(index, part)| self.write_database(index, part)),
        )
        .await?;
        tracing::debug!(
            records = records.len(),
            documents,
            identities,
            "mysql batch applied"
        );
        Ok(())
    }
}
