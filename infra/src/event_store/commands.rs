//! Executing member commands against the event store.
//!
//! cqrs-es decides on the aggregate (read from the event store, or from the member cache when
//! this process wrote the member recently; see [`MemberCache`]) and commits its events in one
//! statement, shared with the commands that commit at the same time ([`MemberEventRepository`]).
//! The commit's transaction also runs the `member_events_before_insert` trigger (migration 0002), which claims
//! bound identities in `identity_owners` and records idempotency keys, so a command either
//! appends all of its events with its identities claimed, or nothing.

use std::collections::HashMap;

use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, EventStore};
use member_domain::{Identity, IdentityKind, Member, MemberCommand, MemberError};
use sqlx::PgPool;
use uuid::Uuid;

use super::append::MemberEventRepository;
use super::group_commit::{GroupCommit, DEFAULT_WRITERS};
use super::member_cache::{CachedMember, MemberCache};
use super::vault::Vault;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How often a command is re-decided after losing an optimistic-concurrency race on its member.
const CONFLICT_ATTEMPTS: usize = 5;

/// A command was not executed. Nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Refused by the member's rules (or by the cross-member rules, mapped to their domain meaning).
    #[error(transparent)]
    Rejected(#[from] MemberError),
    /// The identity belongs to another member. The owner is never revealed, and neither the
    /// value (personal data): only the kind of the refused identity is kept.
    #[error("identity already bound to another member")]
    IdentityAlreadyBound { kind: IdentityKind },
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

type MemberStore = PersistedEventStore<MemberEventRepository, Member>;

/// Executes member commands. Cheap to clone.
#[derive(Clone)]
pub struct CommandService {
    store: std::sync::Arc<MemberStore>,
    cache: MemberCache,
    appends: GroupCommit,
    vault: Vault,
}

/// Where the state a command was decided on came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Basis {
    /// Read from the event store for this attempt: the truth as of the read.
    Loaded,
    /// The member cache, or "no such member yet" for a registration: a guess that only an
    /// append can confirm.
    Guessed,
}

impl CommandService {
    /// A service without a member cache: every command reads its member's events first. What
    /// the operator tools use, which write each member once.
    pub fn new(pool: PgPool, vault: Vault) -> Self {
        Self::with_cache(pool, MemberCache::disabled(), vault)
    }

    /// A service that decides commands on members it wrote recently from `cache` (see
    /// [`MemberCache`]); what the command API uses.
    pub fn with_cache(pool: PgPool, cache: MemberCache, vault: Vault) -> Self {
        Self::with_cache_and_writers(pool, cache, DEFAULT_WRITERS, vault)
    }

    /// [`with_cache`](Self::with_cache), with up to `append_writers` group-commit statements in
    /// flight at once (see [`group_commit`](super::group_commit)).
    pub fn with_cache_and_writers(
        pool: PgPool,
        cache: MemberCache,
        append_writers: usize,
        vault: Vault,
    ) -> Self {
        let appends = GroupCommit::new(pool.clone(), append_writers);
        let repo = MemberEventRepository::new(pool, appends.clone(), vault.clone());
        Self {
            store: std::sync::Arc::new(PersistedEventStore::new_event_store(repo)),
            cache,
            appends,
            vault,
        }
    }

    /// The keys that seal identity values and hash identities (see [`Vault`]).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// How many appends wait for a group-commit writer right now (see
    /// [`GroupCommit::queued`]).
    pub fn queued_appends(&self) -> usize {
        self.appends.queued()
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

    /// [`execute`](Self::execute) on behalf of `cause`: every appended event records the
    /// caller, the request id and the time.
    pub async fn execute_as(
        &self,
        cause: &super::cause::Cause,
        member_id: Uuid,
        command: MemberCommand,
        idempotency: Option<&IdempotencyTag>,
    ) -> Result<Executed, CommandError> {
        self.execute_with_metadata(member_id, command, idempotency, cause.metadata())
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
        if let Some(tag) = idempotency {
            metadata.insert("idempotency_key".to_owned(), tag.key.clone());
            metadata.insert("request_hash".to_owned(), tag.request_hash.clone());
            metadata.insert("success_status".to_owned(), tag.success_status.to_string());
        }
        // The first attempt may decide on a guess; a guess that turns out wrong costs one more
        // attempt, which reads the event store.
        let mut may_guess = true;
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let (mut context, basis) = self.context(member_id, &command, may_guess).await?;
            may_guess = false;
            let sink = cqrs_es::event_sink::EventSink::<Member>::default();
            let decided = context.aggregate.handle(command.clone(), &(), &sink).await;
            let events = sink.collect().await;
            if basis == Basis::Guessed && (decided.is_err() || events.is_empty()) {
                // Nothing would be appended, so nothing would check the guess: decide again on
                // the event store's state.
                self.cache.forget(&member_id);
                continue;
            }
            decided.map_err(CommandError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    member_id,
                    version: context.aggregate.version(),
                    appended: 0,
                });
            }
            // `handle` applied the events to the aggregate as it decided them.
            let after = context.aggregate.clone();
            match self.store.commit(events, context, metadata.clone()).await {
                Ok(committed) => {
                    let version = committed.last().map(|e| e.sequence as u64).unwrap_or(0);
                    self.cache.put(
                        member_id,
                        CachedMember {
                            member: after,
                            sequence: version as usize,
                        },
                    );
                    return Ok(Executed {
                        member_id,
                        version,
                        appended: committed.len(),
                    });
                }
                Err(AggregateError::AggregateConflict) => {
                    self.cache.forget(&member_id);
                    tracing::debug!(
                        attempt,
                        "lost a concurrent write on the member, re-deciding"
                    );
                    continue;
                }
                Err(err)
                    if attempt < CONFLICT_ATTEMPTS
                        && sqlstate(&err).as_deref() == Some("MB500") =>
                {
                    // An unbind of what the store says the member does not hold: a concurrent
                    // command released it first (two erasures, or two unbinds, committed at
                    // once; the trigger runs before the events' key would report the conflict).
                    // Decide again on what the store holds now.
                    self.cache.forget(&member_id);
                    tracing::debug!(attempt, "an unbind lost to a concurrent one, re-deciding");
                    continue;
                }
                Err(err) => {
                    self.cache.forget(&member_id);
                    let err = commit_error(err, &command, &self.vault);
                    // A refusal by the trigger (identity owned elsewhere, an unbind of what the
                    // store says is not held) may only mean the guess was stale.
                    if basis == Basis::Guessed && !matches!(err, CommandError::Unavailable(_)) {
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(CommandError::Conflict)
    }

    /// The state to decide `command` on: the cached member, or for a registration of a member
    /// this process has never seen, an empty one (registrations carry fresh ids); otherwise, and
    /// whenever `may_guess` is false, the member's events read from the store.
    async fn context(
        &self,
        member_id: Uuid,
        command: &MemberCommand,
        may_guess: bool,
    ) -> Result<(EventStoreAggregateContext<Member>, Basis), CommandError> {
        let aggregate_id = member_id.to_string();
        if may_guess {
            let guess = match self.cache.get(&member_id) {
                Some(cached) => Some((cached.member.clone(), cached.sequence)),
                None if matches!(command, MemberCommand::Register { .. }) => {
                    Some((Member::default(), 0))
                }
                None => None,
            };
            if let Some((aggregate, current_sequence)) = guess {
                let context = EventStoreAggregateContext {
                    aggregate_id,
                    aggregate,
                    current_sequence,
                    current_snapshot: None,
                };
                return Ok((context, Basis::Guessed));
            }
        }
        let context = self
            .store
            .load_aggregate(&aggregate_id)
            .await
            .map_err(store_error)?;
        Ok((context, Basis::Loaded))
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

/// The SQLSTATE of a commit the database refused.
fn sqlstate(err: &AggregateError<MemberError>) -> Option<String> {
    let AggregateError::UnexpectedError(source) = err else {
        return None;
    };
    source
        .downcast_ref::<sqlx::Error>()
        .and_then(|e| e.as_database_error())
        .and_then(|db| db.code())
        .map(|code| code.into_owned())
}

/// Reads the trigger's SQLSTATEs out of a failed commit.
fn commit_error(
    err: AggregateError<MemberError>,
    command: &MemberCommand,
    vault: &Vault,
) -> CommandError {
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
        Some("MB409") => identity_conflict(detail, command, vault),
        Some("MB422") => CommandError::IdempotencyKeyInUse,
        _ => store_error(AggregateError::UnexpectedError(source)),
    }
}

/// The trigger names a refused identity by an opaque reference, never by its key: the first 16
/// hex digits of the identity's keyed hash (migration 0010; see [`Vault::identity_ref`]).
pub fn identity_reference(vault: &Vault, key: &member_domain::IdentityKey) -> String {
    let mut reference = vault.identity_ref(key);
    reference.truncate(16);
    reference
}

/// An identity the command did not name itself, yet tried to bind, is the unionid implied by an
/// openid: if another member owns it, the openid belongs to another person's WeChat.
fn identity_conflict(reference: String, command: &MemberCommand, vault: &Vault) -> CommandError {
    let named: Vec<&Identity> = match command {
        MemberCommand::Register { identities } => identities.iter().collect(),
        MemberCommand::BindIdentity { identity } => vec![identity],
        _ => Vec::new(),
    };
    match named
        .into_iter()
        .find(|i| identity_reference(vault, &i.key()) == reference)
    {
        Some(identity) => CommandError::IdentityAlreadyBound {
            kind: identity.kind(),
        },
        None => CommandError::Rejected(MemberError::CrossAccountWechatBinding),
    }
}

fn is_unavailable(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<sqlx::Error>()
        .is_some_and(super::is_unavailable)
}
