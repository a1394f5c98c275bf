//! What the operator tools read and write of the `events` table outside the command path: who is
//! registered, every member's events in order, and the bulk append of `member seed --bulk`. The
//! statements live here, next to the schema they depend on, so the tools hold no SQL.

use std::collections::HashSet;

use futures::stream::BoxStream;
use sqlx::PgPool;
use uuid::Uuid;

use super::AGGREGATE_TYPE;

/// Which of these member ids are registered (have their first event).
pub async fn registered_among(pool: &PgPool, ids: &[String]) -> sqlx::Result<HashSet<String>> {
    Ok(sqlx::query_scalar(
        "SELECT aggregate_id FROM events
         WHERE aggregate_type = $1 AND aggregate_id = ANY($2) AND sequence = 1",
    )
    .bind(AGGREGATE_TYPE)
    .bind(ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect())
}

/// Whether the member is registered (has its first event).
pub async fn is_registered(pool: &PgPool, member_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1)",
    )
    .bind(AGGREGATE_TYPE)
    .bind(member_id.to_string())
    .fetch_one(pool)
    .await
}

/// Every member's events as `(member id, payload)`, member by member in sequence order,
/// streamed (memory stays bounded by a row).
pub fn events_by_member(pool: &PgPool) -> BoxStream<'_, sqlx::Result<(String, serde_json::Value)>> {
    sqlx::query_as::<_, (String, serde_json::Value)>(
        "SELECT aggregate_id, payload::jsonb FROM events
         WHERE aggregate_type = $1 ORDER BY aggregate_id, sequence",
    )
    .bind(AGGREGATE_TYPE)
    .fetch(pool)
}

/// One stored event of a member, as its history shows it: type, sequence, payload, metadata
/// (the cause) and when it was recorded.
pub type HistoryRow = (
    String,
    i64,
    serde_json::Value,
    serde_json::Value,
    chrono::DateTime<chrono::Utc>,
);

/// A member's events, oldest first (empty for an unknown member).
pub async fn history_of(pool: &PgPool, member_id: Uuid) -> sqlx::Result<Vec<HistoryRow>> {
    sqlx::query_as(
        "SELECT event_type, sequence, payload::jsonb, metadata::jsonb, recorded_at FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(AGGREGATE_TYPE)
    .bind(member_id.to_string())
    .fetch_all(pool)
    .await
}

/// The events of new members, column by column, for [`append_new_members`].
#[derive(Debug, Default)]
pub struct NewEvents {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
}

impl NewEvents {
    /// One event: the member's id, its sequence, type, version and JSON payload.
    pub fn push(
        &mut self,
        id: &str,
        sequence: i64,
        event_type: String,
        version: String,
        payload: String,
    ) {
        self.ids.push(id.to_owned());
        self.sequences.push(sequence);
        self.types.push(event_type);
        self.versions.push(version);
        self.payloads.push(payload);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Appends the events in one multi-row INSERT (one transaction), each with `metadata`. Rows get
/// their position, txid, event id and time from the table's defaults and go through the
/// uniqueness trigger like the command path's, so a colliding identity fails the whole batch.
pub async fn append_new_members(
    pool: &PgPool,
    events: &NewEvents,
    metadata: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $7, id, seq, et, ev, payload::jsonb::json, $6::jsonb::json
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
              WITH ORDINALITY AS e(id, seq, et, ev, payload, ord)
         ORDER BY ord",
    )
    .bind(&events.ids)
    .bind(&events.sequences)
    .bind(&events.types)
    .bind(&events.versions)
    .bind(&events.payloads)
    .bind(metadata)
    .bind(AGGREGATE_TYPE)
    .execute(pool)
    .await?;
    Ok(())
}
