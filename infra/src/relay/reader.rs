//! Reading the event store in commit-safe order.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Checkpoint;
use crate::event_store::vault::{Vault, VaultError};

/// The aggregate type of the events the relay publishes (cqrs-es's `Aggregate::TYPE` of
/// `member_domain::Member`).
const MEMBER: &str = "Member";

/// What one read of the event store found.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The member events, in commit order.
    pub events: Vec<EventRow>,
    /// The last event scanned, of any aggregate type: where the next read starts once this
    /// batch is published. `None` when nothing new has committed.
    pub last: Option<Checkpoint>,
    /// How many events were scanned, of any aggregate type (the read's limit when more may wait).
    pub scanned: usize,
}

/// One stored event, as the relay reads it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub member_id: Uuid,
    /// `member_id` as stored (the events' `aggregate_id`).
    pub aggregate_id: String,
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub position: i64,
    pub txid: u64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
}

type Row = (
    String,
    i64,
    String,
    String,
    serde_json::Value,
    serde_json::Value,
    i64,
    String,
    Uuid,
    DateTime<Utc>,
    // aggregate_type: the relay publishes only `MEMBER` events.
    String,
);

fn decode(row: Row) -> Result<EventRow, sqlx::Error> {
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    Ok(EventRow {
        member_id: Uuid::parse_str(&row.0).map_err(|e| bad(Box::new(e)))?,
        aggregate_id: row.0,
        sequence: row.1 as u64,
        event_type: row.2,
        event_version: row.3,
        payload: row.4,
        metadata: row.5,
        position: row.6,
        txid: row.7.parse().map_err(|e| bad(Box::new(e)))?,
        event_id: row.8,
        recorded_at: row.9,
    })
}

const COLUMNS: &str =
    "aggregate_id, sequence, event_type, event_version, payload::jsonb, metadata::jsonb, \
                       position, txid::text, event_id, recorded_at, aggregate_type";

#[derive(Clone)]
pub struct EventStoreReader {
    pool: PgPool,
    vault: Vault,
}

impl EventStoreReader {
    pub fn new(pool: PgPool, vault: Vault) -> Self {
        Self { pool, vault }
    }

    /// Opens the sealed identity values of `rows` (records carry plaintext: projections hold
    /// it, and Kafka keeps it at most `retention.ms`; docs/decisions/0033).
    async fn opened(&self, mut rows: Vec<EventRow>) -> Result<Vec<EventRow>, sqlx::Error> {
        self.vault
            .open_payloads(
                &self.pool,
                rows.iter_mut()
                    .map(|r| (r.aggregate_id.as_str(), &mut r.payload)),
            )
            .await
            .map_err(|e| match e {
                VaultError::Store(e) => e,
                other => sqlx::Error::Decode(Box::new(other)),
            })?;
        Ok(rows)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The next events after `from` in `(txid, position)` order, only from transactions that
    /// have ended (txid below the snapshot's xmin): an event can never commit later *before* an
    /// event already returned.
    ///
    /// The statement is an ordered range scan of `events_commit_order` whatever the table's
    /// statistics say. It once also filtered on `aggregate_type`, and with no statistics (a new
    /// store, or autovacuum off) the planner read that as a few rows and answered from the
    /// primary key instead: every event of the store scanned and sorted on each poll, 12 ms idle
    /// and 93 ms per 1,000-event batch at 180,000 events, growing with the store
    /// (docs/benchmarks.md, 2026-12-03). Events of other aggregate types, which this service
    /// does not write, are skipped here, and the batch's checkpoint still moves past them.
    pub async fn next_batch(&self, from: Checkpoint, limit: u32) -> Result<ReadBatch, sqlx::Error> {
        // `txid` is qualified in ORDER BY: bare, it would name the `txid::text` output column and
        // sort transaction ids as text ("10" before "9").
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM events
             WHERE (txid, position) > ($1::text::xid8, $2)
               AND txid < pg_snapshot_xmin(pg_current_snapshot())
             ORDER BY events.txid, events.position
             LIMIT $3"
        ))
        .bind(from.txid.to_string())
        .bind(from.position)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut batch = ReadBatch {
            events: Vec::with_capacity(rows.len()),
            last: None,
            scanned: rows.len(),
        };
        for row in rows {
            let txid: u64 = row
                .7
                .parse()
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            batch.last = Some(Checkpoint {
                txid,
                position: row.6,
            });
            if row.10 == MEMBER {
                batch.events.push(decode(row)?);
            }
        }
        batch.events = self.opened(batch.events).await?;
        Ok(batch)
    }

    /// Every event of the given members up to the given sequences, in sequence order: the
    /// histories from which the documents after each event are folded.
    ///
    /// One primary-key range per member, whatever the statistics say: `OFFSET 0` keeps the
    /// planner from flattening the lateral subquery into a join, which, with no statistics, it
    /// ran as a hash join over every event of the store (56 ms for 300 members at 180,000
    /// events; 4 ms this way).
    pub async fn histories(&self, members: &[(Uuid, u64)]) -> Result<Vec<EventRow>, sqlx::Error> {
        let ids: Vec<String> = members.iter().map(|(id, _)| id.to_string()).collect();
        let upto: Vec<i64> = members.iter().map(|(_, s)| *s as i64).collect();
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}
             FROM unnest($1::text[], $2::bigint[]) AS m(id, upto)
             CROSS JOIN LATERAL (
                 SELECT * FROM events
                 WHERE aggregate_type = $3 AND aggregate_id = m.id AND sequence <= m.upto
                 OFFSET 0) e
             ORDER BY e.aggregate_id, e.sequence"
        ))
        .bind(&ids)
        .bind(&upto)
        .bind(crate::event_store::AGGREGATE_TYPE)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .into_iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        self.opened(rows).await
    }

    /// How many events are stored after the checkpoint (committed or not yet visible to the
    /// relay): the relay's lag in events. A range of `events_commit_order`, like
    /// [`next_batch`](Self::next_batch), so it costs the lag, not the store.
    pub async fn events_after(&self, from: Checkpoint) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE (txid, position) > ($1::text::xid8, $2)",
        )
        .bind(from.txid.to_string())
        .bind(from.position)
        .fetch_one(&self.pool)
        .await
    }
}
