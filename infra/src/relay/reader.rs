//! Reading the event store in commit-safe order.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Checkpoint;

/// One stored event, as the relay reads it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub member_id: Uuid,
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
);

fn decode(row: Row) -> Result<EventRow, sqlx::Error> {
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    Ok(EventRow {
        member_id: Uuid::parse_str(&row.0).map_err(|e| bad(Box::new(e)))?,
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
                       position, txid::text, event_id, recorded_at";

#[derive(Clone)]
pub struct EventStoreReader {
    pool: PgPool,
}

impl EventStoreReader {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The next events after `from` in `(txid, position)` order, only from transactions that
    /// have ended (txid below the snapshot's xmin): an event can never commit later *before* an
    /// event already returned.
    pub async fn next_batch(
        &self,
        from: Checkpoint,
        limit: u32,
    ) -> Result<Vec<EventRow>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM events
             WHERE (txid, position) > ($1::text::xid8, $2)
               AND txid < pg_snapshot_xmin(pg_current_snapshot())
               AND aggregate_type = 'Member'
             ORDER BY txid, position
             LIMIT $3"
        ))
        .bind(from.txid.to_string())
        .bind(from.position)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode).collect()
    }

    /// Every event of the given members up to the given sequences, in sequence order: the
    /// histories from which the documents after each event are folded.
    pub async fn histories(&self, members: &[(Uuid, u64)]) -> Result<Vec<EventRow>, sqlx::Error> {
        let ids: Vec<String> = members.iter().map(|(id, _)| id.to_string()).collect();
        let upto: Vec<i64> = members.iter().map(|(_, s)| *s as i64).collect();
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM events e
             JOIN unnest($1::text[], $2::bigint[]) AS m(id, upto) ON e.aggregate_id = m.id
             WHERE e.aggregate_type = 'Member' AND e.sequence <= m.upto
             ORDER BY e.aggregate_id, e.sequence"
        ))
        .bind(&ids)
        .bind(&upto)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode).collect()
    }

    /// How many events are stored after the checkpoint (committed or not yet visible to the
    /// relay): the relay's lag in events.
    pub async fn events_after(&self, from: Checkpoint) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT count(*) FROM events WHERE (txid, position) > ($1::text::xid8, $2) AND aggregate_type = 'Member'",
        )
        .bind(from.txid.to_string())
        .bind(from.position)
        .fetch_one(&self.pool)
        .await
    }
}
