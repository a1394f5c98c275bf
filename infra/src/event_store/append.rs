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

pub struct MemberEventRepository {
    reads: PostgresEventRepository,
    appends: GroupCommit,
}

impl MemberEventRepository {
    /// A repository that reads through postgres-es and appends through `appends` (see
    /// [`group_commit`](super::group_commit)).
    pub fn new(pool: PgPool, appends: GroupCommit) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool),
            appends,
        }
    }

    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            // One command appends to one aggregate, committed as one.
            if event.aggregate_id != first.aggregate_id {
                return Err(PersistenceError::UnknownError(
                    "one append must hold the events of one aggregate".into(),
                ));
            }
            rows.push(Row {
                sequence: i64::try_from(event.sequence)
                    .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: event.payload.to_string(),
                metadata: event.metadata.to_string(),
            });
        }
        let idempotency_key = first
            .metadata
            .get("idempotency_key")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.appends
            .append(Append {
                aggregate_type: A::TYPE,
                aggregate_id: first.aggregate_id.clone(),
                idempotency_key,
                rows,
            })
            .await
    }
}

impl PersistedEventRepository for MemberEventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
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

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
