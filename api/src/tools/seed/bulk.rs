//! The bulk writer of `member seed --bulk`: the events the aggregate decides for each new member,
//! appended straight to the events table in one multi-row INSERT per batch.
//!
//! This skips cqrs-es's load-and-commit round trips, not the rules: the events come from
//! `Member::decide` (the same decision as the command path), and the table's trigger
//! `member_events_before_insert` still claims every identity in `identity_owners` and stamps its
//! generation into the metadata, so a colliding identity fails the whole batch. Rows get their
//! position, txid, event id and time from the table's defaults, exactly like postgres-es's
//! inserts, so the relay and the replay read them like any other.

use member_domain::{Member, MemberCommand};
use member_infra::event_store::members::{self, NewEvents};
use member_infra::event_store::vault::Vault;
use serde_json::{Map, Value};
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
    vault: &Vault,
    batch: &[SyntheticMember],
    metadata: &Map<String, Value>,
) -> Result<BatchOutcome, BulkError> {
    let ids: Vec<String> = batch.iter().map(|m| m.member_id.to_string()).collect();
    let existing = members::registered_among(pool, &ids).await?;

    let mut events = NewEvents::default();
    let mut outcome = BatchOutcome::default();
    for (member, id) in batch.iter().zip(ids) {
        if existing.contains(&id) {
            outcome.already_present += 1;
            continue;
        }
        let decided = Member::default().decide(MemberCommand::Register {
            identities: member.identities.clone(),
        })?;
        events.push_new_member(vault, &id, &decided, metadata)?;
        outcome.created += 1;
    }
    outcome.events = events.len() as u64;
    if events.is_empty() {
        return Ok(outcome);
    }
    members::append_new_members(pool, &events).await?;
    Ok(outcome)
}
