//! Group commit: the appends of concurrent commands, written in one statement.
//!
//! On the command path PostgreSQL's cost is per statement and per commit far more than per row
//! (`pgbench` on this machine: one row per statement 1,848 rows/s, four rows 5,574, eight rows
//! 7,710, the identity trigger running for every row; docs/benchmarks.md). So appends that arrive
//! while earlier ones are being written wait in a queue, and the next writer takes all of them
//! (up to [`MAX_BATCH_ROWS`]) into one `INSERT ... SELECT FROM unnest(...)`: one statement, one
//! transaction, one WAL flush for all. Nothing waits for a batch to fill: a lone command is
//! written at once, alone, as before. See docs/decisions/0015-group-commit.md.
//!
//! What a batch must not change:
//! - **Each command still commits all its events or none, and is answered only after the
//!   commit.** A batch commits or fails as a whole. When it fails for a reason that belongs to
//!   one command (a lost optimistic race, an identity owned elsewhere, an idempotency key in
//!   use), every command of the batch is written again alone, in queue order, and answered with
//!   its own outcome, exactly as without batching.
//! - **Refusals stay exact.** A batch never holds two appends to one member (the second would
//!   look like a lost race of the first) nor two commands with one idempotency key (the trigger
//!   lets the events of one transaction share a key, which is how one command's events share
//!   it, so two commands in one transaction would both pass). Such an append waits for the next
//!   batch.
//! - **Order.** Rows are inserted in queue order and each command's events in sequence order, so
//!   positions still follow sequences within a member (the relay publishes by position).
//! - **Cancellation.** The writer is a spawned task: a caller that goes away (a client that
//!   disconnected) does not cancel a write that other callers wait on, and its own command is
//!   still committed or refused as a whole.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use cqrs_es::persist::PersistenceError;
use sqlx::PgPool;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// The most rows one statement writes. Past a few dozen rows the gain per row is small, and a
/// batch that fails is written again command by command.
pub const MAX_BATCH_ROWS: usize = 64;

/// How many batches are written at once by default (each on its own connection): one per core of
/// the event store's machine. More writers make smaller batches, so more statements for the same
/// commands: on 2 cores, 2 writers carried 25-33% more commands than 4 (docs/benchmarks.md,
/// 2026-12-05).
pub const DEFAULT_WRITERS: usize = 2;

/// Payload and metadata pass through `jsonb`, so they are stored in the normalized text
/// postgres-es (which binds `jsonb`) and `seed --bulk` store.
const APPEND: &str = "INSERT INTO events
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version,
       e.payload::jsonb::json, e.metadata::jsonb::json
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[])
     WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, event_version,
                          payload, metadata, n)
ORDER BY e.n";

/// One event, ready for the statement.
#[derive(Debug, Clone)]
pub struct Row {
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// The events of one command: one aggregate, committed together or not at all.
#[derive(Debug, Clone)]
pub struct Append {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// The command's idempotency key, if it has one (also in every row's metadata).
    pub idempotency_key: Option<String>,
    pub rows: Vec<Row>,
}

struct Queued {
    append: Append,
    answer: oneshot::Sender<Result<(), PersistenceError>>,
}

/// Writes appends, batching those that arrive together. Cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    queue: Mutex<VecDeque<Queued>>,
    /// One permit per batch being written.
    writers: Arc<Semaphore>,
}

impl GroupCommit {
    pub fn new(pool: PgPool, writers: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                queue: Mutex::new(VecDeque::new()),
                writers: Arc::new(Semaphore::new(writers.max(1))),
            }),
        }
    }

    /// How many appends wait for a writer (not counting those being written): what an operator
    /// reads as `member_append_queue_depth`, and what tests wait on to form a batch.
    pub fn queued(&self) -> usize {
        self.inner.lock_queue().len()
    }

    /// Commits `append` (with whatever else is queued) and answers once it is committed or
    /// refused. A unique violation of the events' primary key is an optimistic-lock conflict of
    /// this command, as postgres-es reads it.
    pub async fn append(&self, append: Append) -> Result<(), PersistenceError> {
        if append.rows.is_empty() {
            return Ok(());
        }
        let (answer, answered) = oneshot::channel();
        {
            let mut queue = self.inner.lock_queue();
            queue.push_back(Queued { append, answer });
            metrics::gauge!("member_append_queue_depth").set(queue.len() as f64);
        }
        if let Ok(permit) = self.inner.writers.clone().try_acquire_owned() {
            tokio::spawn(self.inner.clone().write_queued(permit));
        }
        // A writer holds a permit until it has seen the queue empty, and looks again after
        // releasing it, so a queued append always has a writer coming.
        answered.await.unwrap_or_else(|_| {
            Err(PersistenceError::UnknownError(
                "the append's writer ended without an answer".into(),
            ))
        })
    }
}

impl Inner {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        // A panic while holding the lock cannot leave the queue half-updated (push and pop
        // only), so a poisoned lock is still a good queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn write_queued(self: Arc<Self>, mut permit: OwnedSemaphorePermit) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                drop(permit);
                // An append queued after the queue was seen empty, but before the permit was
                // released, found no permit free; look once more so it is not left waiting.
                if self.lock_queue().is_empty() {
                    return;
                }
                match self.writers.clone().try_acquire_owned() {
                    Ok(again) => permit = again,
                    // Another writer took the permit, and the queue with it.
                    Err(_) => return,
                }
                continue;
            }
            self.write(batch).await;
        }
    }

    /// The queued appends that may share a statement, oldest first; the others stay queued, in
    /// their order.
    fn take_batch(&self) -> Vec<Queued> {
        let mut queue = self.lock_queue();
        let mut batch = Vec::new();
        let mut rows = 0;
        let mut members = HashSet::new();
        let mut keys = HashSet::new();
        let mut index = 0;
        while index < queue.len() {
            let append = &queue[index].append;
            if !batch.is_empty() && rows + append.rows.len() > MAX_BATCH_ROWS {
                break;
            }
            let clashes = members.contains(&append.aggregate_id)
                || append
                    .idempotency_key
                    .as_ref()
                    .is_some_and(|key| keys.contains(key));
            if clashes {
                index += 1;
                continue;
            }
            let Some(queued) = queue.remove(index) else {
                break;
            };
            rows += queued.append.rows.len();
            members.insert(queued.append.aggregate_id.clone());
            if let Some(key) = &queued.append.idempotency_key {
                keys.insert(key.clone());
            }
            batch.push(queued);
        }
        metrics::gauge!("member_append_queue_depth").set(queue.len() as f64);
        batch
    }

    async fn write(&self, batch: Vec<Queued>) {
        if batch.len() == 1 {
            self.write_alone(batch).await;
            return;
        }
        let appends: Vec<&Append> = batch.iter().map(|q| &q.append).collect();
        match insert(&self.pool, &appends).await {
            Ok(()) => {
                metrics::histogram!("member_append_batch_commands").record(batch.len() as f64);
                for queued in batch {
                    // The caller may have gone away; its command is committed anyway.
                    let _ = queued.answer.send(Ok(()));
                }
            }
            // The database refused the statement, so nothing of it was written: a refusal that
            // belongs to one of the commands (or a failure that each will meet again). Each
            // command alone, for its own answer. Not when the server is going away or is no
            // longer the primary (a fail-over, ADR 0037): a commit interrupted then may have been
            // made, so that is answered like a lost connection, below.
            Err(err) if matches!(err, sqlx::Error::Database(_)) && !super::is_unavailable(&err) => {
                metrics::counter!("member_append_batch_split_total").increment(1);
                self.write_alone(batch).await;
            }
            // The statement may not have reached the database, or its outcome is unknown (the
            // connection failed after sending it): writing it again could commit it twice. Each
            // command gets the answer a lone command gets.
            Err(err) => {
                for queued in batch {
                    let _ = queued.answer.send(Err(persistence_error(same_error(&err))));
                }
            }
        }
    }

    async fn write_alone(&self, batch: Vec<Queued>) {
        for queued in batch {
            let outcome = insert(&self.pool, &[&queued.append])
                .await
                .map_err(persistence_error);
            // The caller may have gone away; its command is committed or refused anyway.
            let _ = queued.answer.send(outcome);
        }
    }
}

/// An error like `err` for each command of a failed batch (`sqlx::Error` is not `Clone`). The
/// kinds the command service tells apart (connection lost, pool exhausted or closed) are kept;
/// a server going away or no longer primary becomes a lost connection; other errors keep their
/// message.
fn same_error(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::Database(db) if super::is_unavailable(err) => sqlx::Error::Io(
            std::io::Error::new(std::io::ErrorKind::ConnectionAborted, db.to_string()),
        ),
        sqlx::Error::Io(e) => sqlx::Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        sqlx::Error::Tls(e) => sqlx::Error::Tls(e.to_string().into()),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::WorkerCrashed => sqlx::Error::WorkerCrashed,
        sqlx::Error::Protocol(e) => sqlx::Error::Protocol(e.clone()),
        // Not a kind `is_unavailable` knows: the message is kept, the outcome stays "internal".
        other => sqlx::Error::Decode(other.to_string().into()),
    }
}

/// One statement, in its own implicit transaction: the rows of `appends`, in order.
async fn insert(pool: &PgPool, appends: &[&Append]) -> Result<(), sqlx::Error> {
    let rows: usize = appends.iter().map(|a| a.rows.len()).sum();
    let mut types = Vec::with_capacity(rows);
    let mut ids = Vec::with_capacity(rows);
    let mut sequences = Vec::with_capacity(rows);
    let mut event_types = Vec::with_capacity(rows);
    let mut versions = Vec::with_capacity(rows);
    let mut payloads = Vec::with_capacity(rows);
    let mut metadata = Vec::with_capacity(rows);
    for append in appends {
        for row in &append.rows {
            types.push(append.aggregate_type);
            ids.push(append.aggregate_id.as_str());
            sequences.push(row.sequence);
            event_types.push(row.event_type.as_str());
            versions.push(row.event_version.as_str());
            payloads.push(row.payload.as_str());
            metadata.push(row.metadata.as_str());
        }
    }
    sqlx::query(APPEND)
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .execute(pool)
        .await?;
    Ok(())
}

/// Classifies a failed append as postgres-es does (its error type is private): a unique
/// violation is the primary key of `(aggregate_type, aggregate_id, sequence)`, i.e. a lost race.
/// The trigger's own refusals use their own SQLSTATEs and stay readable in the source.
fn persistence_error(err: sqlx::Error) -> PersistenceError {
    match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        _ if super::is_unavailable(&err) => PersistenceError::ConnectionError(Box::new(err)),
        _ => PersistenceError::UnknownError(Box::new(err)),
    }
}
