//! Turning stored events into Kafka records: envelope + the member document after the event.
//!
//! A record carries the member's document after its event, so the relay folds each member's
//! history. It keeps the fold it last published for recently active members ([`Folds`]): a
//! batch whose member continues from a kept fold, or starts at the member's first event, needs no
//! history from the event store. Only the others' histories are read, and only up to the event
//! before the batch's first one (the batch itself holds the rest). Without that, every batch read
//! its own events a second time, opened their sealed values again and folded whole histories
//! (docs/benchmarks.md, 2026-12-05).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use member_domain::MemberEvent;
use member_projections::{
    EventEnvelope, IdentityChange, MemberFold, MemberRecord, RECORD_SCHEMA_VERSION,
};
use uuid::Uuid;

use super::{EventRow, EventStoreReader, RelayError};

/// Members whose fold the relay keeps: about a kilobyte each. A member's events usually follow
/// each other within seconds (a registration, then its binds), so the recent ones are what matters.
pub(super) const KEPT_FOLDS: u64 = 20_000;

/// The folds of the members the relay published last, each at the member's last published
/// sequence. A fold is a pure function of the member's events 1..=n, which never change once
/// committed, so a kept fold is used only when the batch continues at n + 1; anything else (a
/// batch published again after a failure, another relay having published meanwhile) reads the
/// history as before.
#[derive(Clone)]
pub(super) struct Folds(moka::sync::Cache<Uuid, Arc<MemberFold>>);

/// How long a fold is kept after its last use. A fold holds the member's identity values in
/// plaintext; a member erased while another relay held the lease would otherwise keep them here
/// until evicted.
const KEPT_FOR: std::time::Duration = std::time::Duration::from_secs(600);

impl Folds {
    pub(super) fn new(capacity: u64) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(KEPT_FOR)
                .build(),
        )
    }

    fn at(&self, member: &Uuid, version: u64) -> Option<MemberFold> {
        self.0
            .get(member)
            .filter(|fold| fold.version() == version)
            .map(|fold| MemberFold::clone(&fold))
    }
}

/// Builds the records of a batch, in the batch's order.
pub(super) async fn build(
    reader: &EventStoreReader,
    folds: &Folds,
    batch: &[EventRow],
) -> Result<Vec<MemberRecord>, RelayError> {
    // A member's events are in sequence order within the batch and contiguous (the batch is a
    // range of commit order, and an event is decided on its predecessor committed). Should a
    // store ever break that, the fold refuses the gap and the batch is built from whole histories.
    match continued(reader, folds, batch).await {
        Err(RelayError::Corrupt(reason)) => {
            tracing::debug!(%reason, "batch not continuous per member; folding whole histories");
            from_histories(reader, batch).await
        }
        other => other,
    }
}

/// The fast path: each member's fold continued from the kept one, from nothing (its first
/// event is in the batch), or from its history up to the batch.
async fn continued(
    reader: &EventStoreReader,
    folds: &Folds,
    batch: &[EventRow],
) -> Result<Vec<MemberRecord>, RelayError> {
    let mut states: HashMap<Uuid, MemberFold> = HashMap::new();
    let mut before: Vec<(Uuid, u64)> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    for row in batch {
        if !seen.insert(row.member_id) {
            continue;
        }
        let previous = row.sequence.saturating_sub(1);
        let fold = if previous == 0 {
            Some(MemberFold::new(row.member_id))
        } else {
            folds.at(&row.member_id, previous)
        };
        match fold {
            Some(fold) => {
                states.insert(row.member_id, fold);
            }
            None => before.push((row.member_id, previous)),
        }
    }
    metrics::counter!("member_relay_histories_read_total").increment(before.len() as u64);
    if !before.is_empty() {
        for row in reader.histories(&before).await? {
            let fold = states
                .entry(row.member_id)
                .or_insert_with(|| MemberFold::new(row.member_id));
            let event = decode_event(&row)?;
            fold.apply(row.sequence, event, row.recorded_at, generation(&row))
                .map_err(|e| RelayError::Corrupt(e.to_string()))?;
        }
    }
    let mut records = Vec::with_capacity(batch.len());
    for row in batch {
        let fold = states
            .entry(row.member_id)
            .or_insert_with(|| MemberFold::new(row.member_id));
        let event = decode_event(row)?;
        let identity_change = identity_change(&event, row);
        let erasure = matches!(event, MemberEvent::MemberErased {});
        fold.apply(row.sequence, event, row.recorded_at, generation(row))
            .map_err(|e| RelayError::Corrupt(e.to_string()))?;
        let erased = if erasure {
            fold.erased_identities().to_vec()
        } else {
            Vec::new()
        };
        records.push(record(row, identity_change, fold.document(), erased));
    }
    for (member, fold) in states {
        folds.0.insert(member, Arc::new(fold));
    }
    Ok(records)
}

/// Builds the records of a batch from its members' whole histories: one query loads them, each
/// member is folded once.
async fn from_histories(
    reader: &EventStoreReader,
    batch: &[EventRow],
) -> Result<Vec<MemberRecord>, RelayError> {
    let mut upto: HashMap<Uuid, u64> = HashMap::new();
    for row in batch {
        let s = upto.entry(row.member_id).or_default();
        *s = (*s).max(row.sequence);
    }
    let members: Vec<(Uuid, u64)> = upto.into_iter().collect();
    let history = reader.histories(&members).await?;

    let wanted: HashSet<(Uuid, u64)> = batch.iter().map(|r| (r.member_id, r.sequence)).collect();
    let mut documents = HashMap::new();
    let mut folds: HashMap<Uuid, MemberFold> = HashMap::new();
    for row in history {
        let fold = folds
            .entry(row.member_id)
            .or_insert_with(|| MemberFold::new(row.member_id));
        let event = decode_event(&row)?;
        let erasure = matches!(event, MemberEvent::MemberErased {});
        fold.apply(row.sequence, event, row.recorded_at, generation(&row))
            .map_err(|e| RelayError::Corrupt(e.to_string()))?;
        if wanted.contains(&(row.member_id, row.sequence)) {
            let erased = if erasure {
                fold.erased_identities().to_vec()
            } else {
                Vec::new()
            };
            documents.insert((row.member_id, row.sequence), (fold.document(), erased));
        }
    }

    batch
        .iter()
        .map(|row| {
            let (document, erased_identities) = documents
                .remove(&(row.member_id, row.sequence))
                .ok_or_else(|| {
                    RelayError::Corrupt(format!(
                        "no history for event at position {}",
                        row.position
                    ))
                })?;
            let event = decode_event(row)?;
            Ok(record(
                row,
                identity_change(&event, row),
                document,
                erased_identities,
            ))
        })
        .collect()
}

fn identity_change(event: &MemberEvent, row: &EventRow) -> Option<IdentityChange> {
    match (event, generation(row)) {
        (MemberEvent::IdentityBound { identity }, Some(generation)) => Some(IdentityChange {
            key: identity.key(),
            bound: true,
            generation,
        }),
        (MemberEvent::IdentityUnbound { identity, .. }, Some(generation)) => Some(IdentityChange {
            key: identity.key(),
            bound: false,
            generation,
        }),
        _ => None,
    }
}

fn record(
    row: &EventRow,
    identity_change: Option<IdentityChange>,
    document: member_projections::MemberDocument,
    erased_identities: Vec<member_projections::BoundIdentity>,
) -> MemberRecord {
    MemberRecord {
        schema_version: RECORD_SCHEMA_VERSION,
        event: EventEnvelope {
            event_id: row.event_id,
            member_id: row.member_id,
            version: row.sequence,
            position: row.position,
            event_type: row.event_type.clone(),
            event_version: row.event_version.clone(),
            recorded_at: row.recorded_at,
            payload: row.payload.clone(),
        },
        identity_change,
        document,
        erased_identities,
    }
}

pub(crate) fn decode_event(row: &EventRow) -> Result<MemberEvent, RelayError> {
    serde_json::from_value(row.payload.clone()).map_err(|e| {
        RelayError::Corrupt(format!(
            "event at position {} ({} {}): {e}",
            row.position, row.event_type, row.event_version
        ))
    })
}

/// The identity generation the store's trigger wrote into the metadata of binds and unbinds.
pub(crate) fn generation(row: &EventRow) -> Option<u64> {
    row.metadata
        .get("identity_generation")
        .and_then(|g| g.as_str())
        .and_then(|g| g.parse().ok())
}
