//! The bulk writer of `member seed --bulk`: the events the aggregate decides for each new member,
//! appended straight to the events table in one multi-row INSERT per batch.
//!
//! This skips cqrs-es's load-and-commit round trips, not the rules: the events come from
//! `Member::decide` (the same decision as the command path), and the table's trigger
//! `member_events_before_insert` still claims every identity in `identity_owners` and stamps its
//! generation into the metadata, so a colliding identity fails the whole batch. Rows get their
//! position, txid, event id and time from the table's defaults, exactly like postgres-es's
//! inserts, so the relay and the replay read them like any other.

use std::collections::HashSet;

use cqrs_es::DomainEvent;
use member_domain::{Member, MemberCommand};
use sqlx::PgPool;

use super::generate::SyntheticMember;

/// What one batch did.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchOutcome {
    pub created: u64,
    pub already_present: u64,
    pub events: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("the aggregate refused a synthetic member: {0}")]
    Refused(#[from] member_domain::MemberError),
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("serializing an event: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Appends the members of `batch` that are not in the store yet, in one statement (one
/// transaction). Members already registered (an earlier run of the same seed) are skipped.
pub async fn write_batch(
    pool: &PgPool,
    batch: &[SyntheticMember],
    metadata: &str,
) -> Result<BatchOutcome, BulkError> {
    let ids: Vec<String> = batch.iter().map(|m| m.member_id.to_string()).collect();
    let existing: HashSet<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM events
         WHERE aggregate_type = 'Member' AND aggregate_id = ANY($1) AND sequence = 1",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();

    let mut rows = Rows::default();
    let mut outcome = BatchOutcome::default();
    for (member, id) in batch.iter().zip(ids) {
        if existing.contains(&id) {
            outcome.already_present += 1;
            continue;
        }
        let events = Member::default().decide(MemberCommand::Register {
            identities: member.identities.clone(),
        })?;
        for (sequence, event) in (1i64..).zip(events) {
            rows.ids.push(id.clone());
            rows.sequences.push(sequence);
            rows.types.push(event.event_type());
            rows.versions.push(event.event_version());
            rows.payloads.push(serde_json::to_string(&event)?);
        }
        outcome.created += 1;
    }
    outcome.events = rows.ids.len() as u64;
    if rows.ids.is_empty() {
        return Ok(outcome);
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Member', id, seq, et, ev, payload::jsonb::json, $6::jsonb::json
         FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])
              WITH ORDINALITY AS e(id, seq, et, ev, payload, ord)
         ORDER BY ord",
    )
    .bind(&rows.ids)
    .bind(&rows.sequences)
    .bind(&rows.types)
    .bind(&rows.versions)
    .bind(&rows.payloads)
    .bind(metadata)
    .execute(pool)
    .await?;
    Ok(outcome)
}

#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    sequences: Vec<i64>,
    types: Vec<String>,
    versions: Vec<String>,
    payloads: Vec<String>,
}
