//! The member event repository: postgres-es for every read, one statement for the append.
//!
//! postgres-es appends a command's events as `BEGIN`, one `INSERT` per event, `COMMIT`: three
//! round trips or more for the single event most commands append. On the command path, which is
//! bound by PostgreSQL (docs/benchmarks.md), the append is instead one `INSERT ... SELECT FROM
//! unnest(...)` in its own implicit transaction, shared with the appends of other commands that
//! arrived at the same time ([`group_commit`](super::group_commit)): a command's events, the
//! trigger's identity claims and its idempotency outcome still commit together or not at all,
//! and a lost optimistic race is still the primary key's unique violation, read as a conflict
//! exactly as postgres-es reads it. See docs/decisions/0013-command-path-cache-and-append.md and
//! docs/decisions/0015-group-commit.md.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use super::group_commit::{Append, GroupCommit, Row};
use super::vault::{Vault, MEMBER_KEY_FIELD};

pub struct MemberEventRepository {
    reads: PostgresEventRepository,
    appends: GroupCommit,
    pool: PgPool,
    vault: Vault,
}

impl MemberEventRepository {
    /// A repository that reads through postgres-es and appends through `appends` (see
    /// [`group_commit`](super::group_commit)), sealing identity values on the way in and
    /// opening them on the way out (see [`vault`](super::vault)).
    pub fn new(pool: PgPool, appends: GroupCommit, vault: Vault) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            appends,
            pool,
            vault,
        }
    }

    /// Opens the sealed identity values of events read for the aggregate.
    async fn opened(
        &self,
        mut events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.vault
            .open_payloads(
                &self.pool,
                events
                    .iter_mut()
                    .map(|e| (e.aggregate_id.as_str(), &mut e.payload)),
            )
            .await
            .map_err(vault_error)?;
        Ok(events)
    }

    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        // The member's data key: a new member's is created here and stored by the append's
        // trigger from the first event's metadata (migration 0010); so is the key of a member
        // written before encryption that has none yet.
        let member = first.aggregate_id.as_str();
        let existing = if first.sequence == 1 {
            None
        } else {
            self.vault
                .data_key(&self.pool, member)
                .await
                .map_err(vault_error)?
        };
        let (key, new_key) = match existing {
            Some(key) => (key, None),
            None => {
                let (key, wrapped) = self.vault.new_data_key(member);
                (key, Some(wrapped))
            }
        };
        let mut rows = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            // One command appends to one aggregate, committed as one.
            if event.aggregate_id != first.aggregate_id {
                return Err(PersistenceError::UnknownError(
                    "one append must hold the events of one aggregate".into(),
                ));
            }
            let mut payload = event.payload.clone();
            let mut metadata = match &event.metadata {
                Value::Object(map) => map.clone(),
                _ => serde_json::Map::new(),
            };
            self.vault
                .seal_event(member, &mut payload, &mut metadata, &key);
            if let (0, Some(wrapped)) = (i, &new_key) {
                metadata.insert(MEMBER_KEY_FIELD.to_owned(), Value::String(wrapped.clone()));
            }
            rows.push(Row {
                sequence: i64::try_from(event.sequence)
                    .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: payload.to_string(),
                metadata: Value::Object(metadata).to_string(),
            });
        }
        let idempotency_key = first
            .metadata
            .get("idempotency_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let appended = self
            .appends
            .append(Append {
                aggregate_type: A::TYPE,
                aggregate_id: first.aggregate_id.clone(),
                idempotency_key,
                rows,
            })
            .await;
        if appended.is_ok() && new_key.is_some() {
            self.vault.keep(member, key);
        }
        appended
    }
}

fn not_replayable() -> PersistenceError {
    PersistenceError::UnknownError(
        "member events are sealed: replay them with member_infra::event_store::replay".into(),
    )
}

fn vault_error(err: super::vault::VaultError) -> PersistenceError {
    match err {
        super::vault::VaultError::Store(e) => PersistenceError::ConnectionError(Box::new(e)),
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

impl PersistedEventRepository for MemberEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.reads.get_events::<A>(aggregate_id).await?;
        self.opened(events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        self.opened(events).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.reads.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match snapshot_update {
            None => self.append::<A>(events).await,
            // Snapshots are off (the event store is the source of truth); should they be turned
            // on, postgres-es writes them with the events in its own transaction.
            Some(update) => self.reads.persist::<A>(events, Some(update)).await,
        }
    }

    // cqrs-es's replays would hand sealed payloads to the aggregate; the fold of the store
    // (`event_store::replay`) opens them, and nothing here replays through cqrs-es.
    async fn stream_events<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Err(not_replayable())
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(not_replayable())
    }
}
