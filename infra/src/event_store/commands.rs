//! Executing member commands against the event store.
//!
//! cqrs-es loads the aggregate and commits its events through postgres-es. The commit's
//! transaction also runs the `member_events_before_insert` trigger (migration 0002), which claims
//! bound identities in `identity_owners` and records idempotency keys, so a command either
//! appends all of its events with its identities claimed, or nothing.

use std::collections::HashMap;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use member_domain::{Identity, Member, MemberCommand, MemberError};
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How often a command is re-decided after losing an optimistic-concurrency race on its member.
const CONFLICT_ATTEMPTS: usize = 5;

/// A command was not executed. Nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Refused by the member's rules (or by the cross-member rules, mapped to their domain meaning).
    #[error(transparent)]
    Rejected(#[from] MemberError),
    /// The identity belongs to another member. The owner is never revealed; the key is kept for
    /// debugging only and is not part of the message (it is personal data).
    #[error("identity already bound to another member")]
    IdentityAlreadyBound { key: String },
    /// Another write to the same member kept winning. Safe to retry.
    #[error("concurrent write to the same member")]
    Conflict,
    /// Another request with the same idempotency key is being, or was, committed. Read the stored
    /// outcome and answer with it.
    #[error("idempotency key in use")]
    IdempotencyKeyInUse,
    /// The event store could not be reached. Safe to retry later.
    #[error("event store unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else; a bug or a corrupted store.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Idempotency data written with the events, so the outcome is stored in the same transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyTag {
    pub key: String,
    pub request_hash: String,
    /// The HTTP status of the success response (201 for a registration, 200 otherwise).
    pub success_status: u16,
}

/// A command that was executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    pub member_id: Uuid,
    /// The member's version after the command.
    pub version: u64,
    /// Events appended (0 when the command changed nothing, e.g. binding what is already bound).
    pub appended: usize,
}

type MemberStore = PersistedEventStore<PostgresEventRepository, Member>;

/// Executes member commands. Cheap to clone.
#[derive(Clone)]
pub struct CommandService {
    store: std::sync::Arc<MemberStore>,
}

impl CommandService {
    pub fn new(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool);
        Self {
            store: std::sync::Arc::new(PersistedEventStore::new_event_store(repo)),
        }
    }

    pub async fn execute(
        &self,
        member_id: Uuid,
        command: MemberCommand,
        idempotency: Option<&IdempotencyTag>,
    ) -> Result<Executed, CommandError> {
        self.execute_with_metadata(member_id, command, idempotency, HashMap::new())
            .await
    }

    /// [`execute`](Self::execute), with extra metadata stored on every appended event: the
    /// operator tools record there where a write came from and, for governance, who made it and
    /// why (`source`, `actor`, `note`, ...). Values are strings, as cqrs-es metadata is.
    pub async fn execute_with_metadata(
        &self,
        member_id: Uuid,
        command: MemberCommand,
        idempotency: Option<&IdempotencyTag>,
        mut metadata: HashMap<String, String>,
    ) -> Result<Executed, CommandError> {
        let aggregate_id = member_id.to_string();
        if let Some(tag) = idempotency {
            metadata.insert("idempotency_key".to_owned(), tag.key.clone());
            metadata.insert("request_hash".to_owned(), tag.request_hash.clone());
            metadata.insert("success_status".to_owned(), tag.success_status.to_string());
        }
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let mut context = self
                .store
                .load_aggregate(&aggregate_id)
                .await
                .map_err(store_error)?;
            let sink = cqrs_es::event_sink::EventSink::<Member>::default();
            context
                .aggregate
                .handle(command.clone(), &(), &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Executed {
                    member_id,
                    version: context.aggregate.version(),
                    appended: 0,
                });
            }
            match self.store.commit(events, context, metadata.clone()).await {
                Ok(committed) => {
                    let version = committed.last().map(|e| e.sequence as u64).unwrap_or(0);
                    return Ok(Executed {
                        member_id,
                        version,
                        appended: committed.len(),
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    tracing::debug!(
                        attempt,
                        "lost a concurrent write on the member, re-deciding"
                    );
                    continue;
                }
                Err(err) => return Err(commit_error(err, &command)),
            }
        }
        Err(CommandError::Conflict)
    }
}

impl CommandService {
    /// The member as the command path sees it (its events folded by the aggregate), e.g. to tell
    /// whether an existing member already holds what a tool was about to register.
    pub async fn load(&self, member_id: Uuid) -> Result<Member, CommandError> {
        let context = self
            .store
            .load_aggregate(&member_id.to_string())
            .await
            .map_err(store_error)?;
        Ok(context.aggregate)
    }
}

fn store_error(err: AggregateError<MemberError>) -> CommandError {
    match err {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::DatabaseConnectionError(e) => CommandError::Unavailable(e),
        AggregateError::DeserializationError(e) => CommandError::Internal(e),
        AggregateError::UnexpectedError(e) => {
            if is_unavailable(e.as_ref()) {
                CommandError::Unavailable(e)
            } else {
                CommandError::Internal(e)
            }
        }
    }
}

/// Reads the trigger's SQLSTATEs out of a failed commit.
fn commit_error(err: AggregateError<MemberError>, command: &MemberCommand) -> CommandError {
    let AggregateError::UnexpectedError(source) = err else {
        return store_error(err);
    };
    let Some(db) = source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
    else {
        return store_error(AggregateError::UnexpectedError(source));
    };
    let detail = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail())
        .unwrap_or_default()
        .to_owned();
    match db.code().as_deref() {
        Some("MB409") => identity_conflict(detail, command),
        Some("MB422") => CommandError::IdempotencyKeyInUse,
        _ => store_error(AggregateError::UnexpectedError(source)),
    }
}

/// An identity the command did not name itself, yet tried to bind, is the unionid implied by an
/// openid: if another member owns it, the openid belongs to another person's WeChat.
fn identity_conflict(key: String, command: &MemberCommand) -> CommandError {
    let named: Vec<String> = match command {
        MemberCommand::Register { identities } => identities.iter().map(key_of).collect(),
        MemberCommand::BindIdentity { identity } => vec![key_of(identity)],
        _ => Vec::new(),
    };
    if named.contains(&key) {
        CommandError::IdentityAlreadyBound { key }
    } else {
        CommandError::Rejected(MemberError::CrossAccountWechatBinding)
    }
}

fn key_of(identity: &Identity) -> String {
    identity.key().to_string()
}

fn is_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    matches!(
        err.downcast_ref::<sqlx::Error>(),
        Some(
            sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::WorkerCrashed
        )
    )
}
