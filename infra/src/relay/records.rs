//! Turning stored events into Kafka records: envelope + the member document after the event.

use std::collections::HashMap;

use member_domain::MemberEvent;
use member_projections::{
    EventEnvelope, IdentityChange, MemberFold, MemberRecord, RECORD_SCHEMA_VERSION,
};
use uuid::Uuid;

use super::{EventRow, EventStoreReader, RelayError};

/// Builds the records of a batch, in the batch's order. One query loads the histories of the
/// batch's members; each member is folded once.
pub(super) async fn build(
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

    let wanted: std::collections::HashSet<(Uuid, u64)> =
        batch.iter().map(|r| (r.member_id, r.sequence)).collect();
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
            let identity_change = match (&event, generation(row)) {
                (MemberEvent::IdentityBound { identity }, Some(generation)) => {
                    Some(IdentityChange {
                        key: identity.key(),
                        bound: true,
                        generation,
                    })
                }
                (MemberEvent::IdentityUnbound { identity, .. }, Some(generation)) => {
                    Some(IdentityChange {
                        key: identity.key(),
                        bound: false,
                        generation,
                    })
                }
                _ => None,
            };
            Ok(MemberRecord {
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
            })
        })
        .collect()
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
