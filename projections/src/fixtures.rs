//! Building records from domain events, as the relay does, for tests of sinks and projectors.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use member_domain::MemberEvent;
use uuid::Uuid;

use crate::{EventEnvelope, IdentityChange, MemberFold, MemberRecord, RECORD_SCHEMA_VERSION};

/// Produces the records of one member's history, event by event, with the document after each.
pub struct MemberHistory {
    fold: MemberFold,
    member_id: Uuid,
    records: Vec<MemberRecord>,
}

impl MemberHistory {
    pub fn new(member_id: Uuid) -> Self {
        Self {
            fold: MemberFold::new(member_id),
            member_id,
            records: Vec::new(),
        }
    }

    /// Appends an event. `generation` is the identity's ownership generation for binds and
    /// unbinds (the event store assigns it; tests choose it).
    pub fn push(&mut self, event: MemberEvent, generation: Option<u64>) -> &MemberRecord {
        let version = self.fold.version() + 1;
        let recorded_at = fixed_time(version);
        let identity_change = match (&event, generation) {
            (MemberEvent::IdentityBound { identity }, Some(g)) => Some(IdentityChange {
                key: identity.key(),
                bound: true,
                generation: g,
            }),
            (MemberEvent::IdentityUnbound { identity, .. }, Some(g)) => Some(IdentityChange {
                key: identity.key(),
                bound: false,
                generation: g,
            }),
            _ => None,
        };
        let envelope = EventEnvelope {
            event_id: Uuid::new_v4(),
            member_id: self.member_id,
            version,
            position: version as i64,
            event_type: event.event_type(),
            event_version: event.event_version(),
            recorded_at,
            payload: serde_json::to_value(&event).expect("events serialize"),
        };
        let erasure = matches!(event, MemberEvent::MemberErased {});
        self.fold
            .apply(version, event, recorded_at, generation)
            .expect("fixture events are contiguous");
        self.records.push(MemberRecord {
            schema_version: RECORD_SCHEMA_VERSION,
            event: envelope,
            identity_change,
            document: self.fold.document(),
            erased_identities: if erasure {
                self.fold.erased_identities().to_vec()
            } else {
                Vec::new()
            },
        });
        self.records.last().expect("just pushed")
    }

    pub fn records(&self) -> &[MemberRecord] {
        &self.records
    }
}

fn fixed_time(version: u64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_760_000_000 + version as i64, 0)
        .single()
        .expect("valid timestamp")
}
