//! Read-side building blocks shared by every projection, free of any database client:
//! - [`document`]: the member document that every read store holds, and the pure fold that builds
//!   it from events;
//! - [`record`]: the record the relay publishes to Kafka (event envelope + document after it);
//! - [`batch`]: a batch compacted to the newest state of each row, as sinks write it;
//! - [`shards`]: the routing of members and identities to MySQL logical shards and databases;
//! - the sink and source ports and the projector loop (see `projector`).
//!
//! The query API's read policy (routing chains, circuit breaker) lives in `member-read-policy`.
//!
//! With the `test-support` feature (tests only, never the `member` binary): `fixtures` (records
//! built from domain events, as the relay builds them) and `memory` (the in-memory reference
//! sink).
#![forbid(unsafe_code)]

pub mod batch;
pub mod document;
#[cfg(any(test, feature = "test-support"))]
pub mod fixtures;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod projector;
pub mod record;
pub mod shards;
pub mod sink;
pub mod snapshot;
pub mod status;
pub mod target;
pub mod verify;

pub use batch::{CompactBatch, IdentityEntry};
pub use document::{BoundIdentity, MemberDocument, MemberFold};
pub use record::{EventEnvelope, IdentityChange, MemberRecord, RECORD_SCHEMA_VERSION};
pub use shards::{ShardMap, ShardMapError};
pub use sink::{CacheFill, MemberReader, Sink, SinkError};
pub use target::Target;
