//! The ports of a projection: a sink that materializes records into a read store, and a reader
//! that serves member documents from it.
//!
//! Every adapter obeys the same rules, checked by one contract suite (`tests/src/sink_contract.rs`)
//! run against each of them:
//! - **Document guard**: a stored document is replaced only by a record whose
//!   `document.version` is higher. Duplicates, replays and out-of-order delivery never move a
//!   document backwards.
//! - **Identity guard**: an identity-index entry (for stores that keep one) is written only by a
//!   record whose `identity_change.generation` is higher than the entry's. An unbind leaves a
//!   tombstone with its generation, so that a late bind of an older generation cannot revive it.
//! - **Lookup by identity** returns the member that holds the identity at the highest generation
//!   the store has seen, and only if that member's document (as stored) still lists it.
//! - `apply` returns only when the batch is durable in the store (as durable as the store is:
//!   Redis is a cache). Then, and only then, the projector commits the Kafka offsets.

use async_trait::async_trait;
use member_domain::IdentityKey;
use uuid::Uuid;

use crate::{MemberDocument, MemberRecord};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A read store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The store is down or timed out. Retry with backoff; nothing is lost, the records will be
    /// applied again.
    #[error("{target} unavailable")]
    Unavailable {
        target: String,
        #[source]
        source: BoxError,
    },
    /// The store answered with something this code cannot read (a corrupted document, an
    /// unexpected schema). Not retryable without an operator: verify and repair the target.
    #[error("{target} returned invalid data: {reason}")]
    Corrupt { target: String, reason: String },
}

impl SinkError {
    pub fn unavailable(target: &str, source: impl Into<BoxError>) -> Self {
        SinkError::Unavailable {
            target: target.to_owned(),
            source: source.into(),
        }
    }

    pub fn corrupt(target: &str, reason: impl Into<String>) -> Self {
        SinkError::Corrupt {
            target: target.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Materializes records into one read store.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The projection target this sink writes (`mysql`, `redis-a`, `search-primary`, ...).
    fn target(&self) -> &str;

    /// Applies a batch (in Kafka order per member; members interleaved) under the guards above,
    /// and returns once it is durable.
    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError>;

    /// Releases what the sink holds exclusively (an embedded index's writer and its lock file)
    /// once its projector has stopped, so that another process (a rebuild, a verify, the next
    /// projector) can open the store at once. Reads keep working; later applies may fail.
    async fn close(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Serves member documents from one read store.
#[async_trait]
pub trait MemberReader: Send + Sync + 'static {
    fn target(&self) -> &str;

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError>;

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError>;

    /// The document of `member_id` if this reader holds it in process memory and keeps it
    /// exact (a tracked cache): no I/O, no waiting. `None` (the default) says nothing about
    /// the store: read it with [`MemberReader::by_id`].
    fn cached_by_id(&self, _member_id: Uuid) -> Option<std::sync::Arc<MemberDocument>> {
        None
    }

    /// The same for a lookup by identity: the document of the member the cached identity
    /// entry names, if it lists the identity.
    fn cached_by_identity(&self, _key: &IdentityKey) -> Option<std::sync::Arc<MemberDocument>> {
        None
    }
}

/// A cache that the query path fills after a miss (the Redis centers).
#[async_trait]
pub trait CacheFill: Send + Sync + 'static {
    /// Writes a document read from a slower store into the cache, unless the cache holds a
    /// version at least as new, or the projector's version fence says a newer version exists
    /// (the source store has not caught up yet). Returns whether it was written. Stale data is
    /// never written back.
    async fn fill(&self, doc: &MemberDocument) -> Result<bool, SinkError>;
}
