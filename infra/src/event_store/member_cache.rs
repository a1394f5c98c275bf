//! Members as the command path last saw them, so that a command on a member this process wrote
//! a moment ago does not read its events back first.
//!
//! The cache is a guess, never the truth. A cached member is only used to *decide* a command;
//! the append then claims the next sequence number, and the primary key of the events table
//! refuses it if anything else wrote to the member in between (another process, a tool). The
//! command service then forgets the entry and decides again from the event store. Outcomes that
//! write nothing (a refusal, a command that changes nothing) are never answered from the cache:
//! they are decided again from the event store, because no append checks them.

use std::sync::Arc;
use std::time::Duration;

use member_domain::Member;
use moka::ops::compute::Op;
use moka::sync::Cache;
use uuid::Uuid;

/// A member's state after its event `sequence`.
#[derive(Debug, Clone)]
pub struct CachedMember {
    pub member: Member,
    pub sequence: usize,
}

#[derive(Clone)]
pub struct MemberCache {
    members: Option<Cache<Uuid, Arc<CachedMember>>>,
}

impl MemberCache {
    /// Holds up to `capacity` members, each for `idle` after its last use (0: no cache).
    pub fn new(capacity: u64, idle: Duration) -> Self {
        let members = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build()
        });
        Self { members }
    }

    pub fn disabled() -> Self {
        Self { members: None }
    }

    pub fn get(&self, member_id: &Uuid) -> Option<Arc<CachedMember>> {
        self.members.as_ref()?.get(member_id)
    }

    /// Keeps `member` unless a later state of it is cached already (two commands of this process
    /// on one member may finish in either order).
    pub fn put(&self, member_id: Uuid, member: CachedMember) {
        if let Some(members) = &self.members {
            members
                .entry(member_id)
                .and_compute_with(|current| match current {
                    Some(entry) if entry.value().sequence >= member.sequence => Op::Nop,
                    _ => Op::Put(Arc::new(member)),
                });
        }
    }

    pub fn forget(&self, member_id: &Uuid) {
        if let Some(members) = &self.members {
            members.invalidate(member_id);
        }
    }
}
