//! The record the relay publishes to Kafka, one per event, keyed by member id.
//!
//! It carries the event envelope and the member document as it stands after the event
//! (event-carried state), so that a sink applies it as one version-guarded upsert without
//! reading its own store. `schema_version` lets the format evolve: readers refuse versions
//! they do not know instead of guessing.

use chrono::{DateTime, Utc};
use member_domain::IdentityKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{BoundIdentity, MemberDocument};

/// The version of the record format written by this code.
pub const RECORD_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub schema_version: u32,
    pub event: EventEnvelope,
    /// The identity this event bound or unbound, with its ownership generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_change: Option<IdentityChange>,
    /// The member document after this event.
    pub document: MemberDocument,
    /// On a `MemberErased` record only: the identity-index entries the member left behind (each
    /// identity it released, with the generation of the release). Stores delete each entry whose
    /// generation is not higher (a higher one belongs to a later holder). Absent from every other
    /// record, so readers of the format before erasure existed read this one as a tombstone
    /// document (docs/decisions/0033).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub erased_identities: Vec<BoundIdentity>,
}

/// Where an event sits: in its member's history and in the store's commit order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub member_id: Uuid,
    /// The aggregate sequence of this event: the document's version after it.
    pub version: u64,
    /// The event store's global position (unique; commit order is `(txid, position)`).
    pub position: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The domain event itself, as stored.
    pub payload: serde_json::Value,
}

/// An identity changing owner. `generation` counts every bind and unbind of this identity across
/// all members, in the order the event store serialized them, so an identity index can order a
/// move from one member to another even when the two members' records arrive out of order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChange {
    pub key: IdentityKey,
    pub bound: bool,
    pub generation: u64,
}

/// A record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record is not valid json for schema version {RECORD_SCHEMA_VERSION}: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "record schema version {0} is not supported (this build reads {RECORD_SCHEMA_VERSION})"
    )]
    UnsupportedSchema(u32),
}

impl MemberRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a member record always serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, RecordError> {
        #[derive(Deserialize)]
        struct Probe {
            schema_version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes)?;
        if probe.schema_version != RECORD_SCHEMA_VERSION {
            return Err(RecordError::UnsupportedSchema(probe.schema_version));
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}
