//! An in-memory read store: the reference implementation of the sink rules, used by tests of the
//! projector loop and to check that the contract suite itself is right.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use member_domain::IdentityKey;
use uuid::Uuid;

use crate::sink::{MemberReader, Sink, SinkError};
use crate::{MemberDocument, MemberRecord};

#[derive(Default)]
struct State {
    documents: HashMap<Uuid, MemberDocument>,
    /// identity -> (owner or None for a tombstone, generation)
    identities: HashMap<IdentityKey, (Option<Uuid>, u64)>,
}

/// A store in memory, with a switch to simulate an outage.
#[derive(Default)]
pub struct MemoryStore {
    target: String,
    state: Mutex<State>,
    down: AtomicBool,
    applied_batches: AtomicUsize,
}

impl MemoryStore {
    pub fn new(target: &str) -> Self {
        Self {
            target: target.to_owned(),
            ..Default::default()
        }
    }

    /// While down, `apply` and reads fail with `Unavailable`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn applied_batches(&self) -> usize {
        self.applied_batches.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.state.lock().expect("state").documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check_up(&self) -> Result<(), SinkError> {
        if self.down.load(Ordering::SeqCst) {
            Err(SinkError::unavailable(&self.target, "simulated outage"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Sink for MemoryStore {
    fn target(&self) -> &str {
        &self.target
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        self.check_up()?;
        let mut state = self.state.lock().expect("state");
        for record in records {
            let doc = &record.document;
            let newer = state
                .documents
                .get(&doc.member_id)
                .is_none_or(|stored| stored.version < doc.version);
            if newer {
                state.documents.insert(doc.member_id, doc.clone());
            }
            if let Some(change) = &record.identity_change {
                let entry = state.identities.get(&change.key);
                if entry.is_none_or(|(_, g)| *g < change.generation) {
                    let owner = change.bound.then_some(doc.member_id);
                    state
                        .identities
                        .insert(change.key.clone(), (owner, change.generation));
                }
            }
            for left in &record.erased_identities {
                if state
                    .identities
                    .get(&left.key)
                    .is_some_and(|(_, g)| *g <= left.generation)
                {
                    state.identities.remove(&left.key);
                }
            }
        }
        self.applied_batches.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[async_trait]
impl MemberReader for MemoryStore {
    fn target(&self) -> &str {
        &self.target
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        self.check_up()?;
        Ok(self
            .state
            .lock()
            .expect("state")
            .documents
            .get(&member_id)
            .cloned())
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        self.check_up()?;
        let state = self.state.lock().expect("state");
        let Some((Some(owner), _)) = state.identities.get(key) else {
            return Ok(None);
        };
        Ok(state
            .documents
            .get(owner)
            .filter(|doc| doc.generation_of(key).is_some())
            .cloned())
    }
}
