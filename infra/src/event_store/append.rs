//! The member event repository: postgres-es for every read, one statement for the append.
//!
//! postgres-es appends a command's events as `BEGIN`, one `INSERT` per event, `COMMIT`: three
//! round trips or more for the single event most commands append. On the command path, which is
//! bound by PostgreSQL (docs/benchmarks.md), the append is instead one `INSERT ... SELECT FROM
//! unnest(...)` in its own implicit transaction: the events, the trigger's identity claims and
//! the idempotency outcome still commit together or not at all, and a lost optimistic race is
//! still the primary key's unique violation, read as a conflict exactly as postgres-es reads it.
//! See docs/decisions/0013-command-path-cache-and-append.md.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

/// Rows are inserted in the order of their ordinality, so positions follow sequences within a
/// command (the relay publishes by position). Payload and metadata pass through `jsonb`, so they
/// are stored in the normalized text postgres-es (which binds `jsonb`) and `seed --bulk` store.
const APPEND: &str = "INSERT INTO events
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload::jsonb::json, e.metadata::jsonb::json
FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
     WITH ORDINALITY AS e(sequence, event_type, event_version, payload, metadata, n)
ORDER BY e.n";

pub struct MemberEventRepository {
    reads: PostgresEventRepository,
    pool: PgPool,
}

impl MemberEventRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut sequences = Vec::with_capacity(events.len());
        let mut types = Vec::with_capacity(events.len());
        let mut versions = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        let mut metadata = Vec::with_capacity(events.len());
        for event in events {
            // One command appends to one aggregate; the statement binds its id once.
            if event.aggregate_id != first.aggregate_id {
                return Err(PersistenceError::UnknownError(
                    "one append must hold the events of one aggregate".into(),
                ));
            }
            sequences.push(
                i64::try_from(event.sequence)
                    .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?,
            );
            types.push(event.event_type.as_str());
            versions.push(event.event_version.as_str());
            payloads.push(event.payload.to_string());
            metadata.push(event.metadata.to_string());
        }
        sqlx::query(APPEND)
            .bind(A::TYPE)
            .bind(first.aggregate_id.as_str())
            .bind(&sequences)
            .bind(&types)
            .bind(&versions)
            .bind(&payloads)
            .bind(&metadata)
            .execute(&self.pool)
            .await
            .map_err(persistence_error)?;
        Ok(())
    }
}

/// Classifies a failed append as postgres-es does (its error type is private): a unique
/// violation is the primary key of `(aggregate_type, aggregate_id, sequence)`, i.e. a lost race.
/// The trigger's own refusals use their own SQLSTATEs and stay readable in the source.
fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            PersistenceError::ConnectionError(Box::new(err))
        }
        _ => PersistenceError::UnknownError(Box::new(err)),
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
