//! What the operator tools read and write of the `events` table outside the command path: who is
//! registered, every member's events in order, and the bulk append of `member seed --bulk`. The
//! statements live here, next to the schema they depend on, so the tools hold no SQL.

use std::collections::HashSet;

use cqrs_es::DomainEvent;
use futures::stream::BoxStream;
use futures::StreamExt;
use member_domain::MemberEvent;
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::vault::{Vault, VaultError, MEMBER_KEY_FIELD};
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

/// Every member's events as `(member id, payload)` with identity values opened, member by
/// member in sequence order, streamed (memory stays bounded by a row).
pub fn events_by_member<'a>(
    pool: &'a PgPool,
    vault: &'a Vault,
) -> BoxStream<'a, Result<(String, Value), VaultError>> {
    sqlx::query_as::<_, (String, Value, Option<String>, Option<Vec<u8>>)>(
        "SELECT e.aggregate_id, e.payload::jsonb, k.key_id, k.wrapped
         FROM events e LEFT JOIN member_keys k ON k.member_id = e.aggregate_id
         WHERE e.aggregate_type = $1 ORDER BY e.aggregate_id, e.sequence",
    )
    .bind(AGGREGATE_TYPE)
    .fetch(pool)
    .map(move |row| {
        let (id, mut payload, key_id, wrapped) = row?;
        let key = match (key_id, wrapped) {
            (Some(key_id), Some(wrapped)) => Some(vault.unwrap(&id, &key_id, &wrapped)?),
            _ => None,
        };
        vault.open_event(&id, &mut payload, key.as_ref())?;
        Ok((id, payload))
    })
    .boxed()
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

/// A member's events, oldest first, identity values opened (empty for an unknown member; an
/// erased member's values read `[erased]`).
pub async fn history_of(
    pool: &PgPool,
    vault: &Vault,
    member_id: Uuid,
) -> Result<Vec<HistoryRow>, VaultError> {
    let id = member_id.to_string();
    let mut rows: Vec<HistoryRow> = sqlx::query_as(
        "SELECT event_type, sequence, payload::jsonb, metadata::jsonb, recorded_at FROM events
         WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence",
    )
    .bind(AGGREGATE_TYPE)
    .bind(&id)
    .fetch_all(pool)
    .await?;
    vault
        .open_payloads(pool, rows.iter_mut().map(|r| (id.as_str(), &mut r.2)))
        .await?;
    Ok(rows)
}

/// The events of new members, column by column, for [`append_new_members`].
#[derive(Debug, Default)]
pub struct NewEvents {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
    metadata: Vec<String>,
}

impl NewEvents {
    /// The events of a new member, sequences from 1: identity values sealed with a new data key
    /// (stored by the trigger from the first event's metadata), each event with `metadata`.
    pub fn push_new_member(
        &mut self,
        vault: &Vault,
        id: &str,
        events: &[MemberEvent],
        metadata: &Map<String, Value>,
    ) -> Result<(), serde_json::Error> {
        let (key, wrapped) = vault.new_data_key(id);
        for (sequence, event) in (1i64..).zip(events) {
            let mut payload = serde_json::to_value(event)?;
            let mut meta = metadata.clone();
            vault.seal_event(id, &mut payload, &mut meta, &key);
            if sequence == 1 {
                meta.insert(MEMBER_KEY_FIELD.to_owned(), Value::String(wrapped.clone()));
            }
            self.ids.push(id.to_owned());
            self.sequences.push(sequence);
            self.types.push(event.event_type());
            self.versions.push(event.event_version());
            self.payloads.push(payload.to_string());
            self.metadata.push(Value::Object(meta).to_string());
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Appends the events in one multi-row INSERT (one transaction). Rows get their position, txid,
/// event id and time from the table's defaults and go through the uniqueness trigger like the
/// command path's, so a colliding identity fails the whole batch.
pub async fn append_new_members(pool: &PgPool, events: &NewEvents) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT $7, id, seq, et, ev, payload::jsonb::json, meta::jsonb::json
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
              WITH ORDINALITY AS e(id, seq, et, ev, payload, meta, ord)
         ORDER BY ord",
    )
    .bind(&events.ids)
    .bind(&events.sequences)
    .bind(&events.types)
    .bind(&events.versions)
    .bind(&events.payloads)
    .bind(&events.metadata)
    .bind(AGGREGATE_TYPE)
    .execute(pool)
    .await?;
    Ok(())
}
