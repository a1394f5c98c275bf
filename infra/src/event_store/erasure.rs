//! Erasure of a member's personal data (docs/decisions/0033): the command, and its receipt.
//!
//! The erasure is an ordinary command ([`MemberCommand::Erase`]): the aggregate releases the
//! member's identities (`IdentityUnbound`, reason `member_erased`) and appends `MemberErased`;
//! the identity trigger releases each identity in `identity_owners` and, for `MemberErased`,
//! writes the receipt's acceptance (`member_erasures`) in the same transaction (migration 0007).
//! Each projector records when its store applied the erasure ([`record_applied`]).

use chrono::{DateTime, Utc};
use member_domain::{MemberCommand, MemberError};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::cause::Cause;
use super::commands::{CommandError, CommandService};

/// When an erasure was accepted, and when each store applied it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReceipt {
    pub member_id: Uuid,
    pub accepted_at: DateTime<Utc>,
    /// The member's version after `MemberErased`.
    #[serde(skip)]
    pub version: u64,
    /// Every target that has applied the erasure, with when (targets not listed have not yet).
    #[serde(skip)]
    pub applied: Vec<(String, DateTime<Utc>)>,
    /// When the member's identity values were redacted from the event log (migration 0008).
    #[serde(skip)]
    pub purged_at: Option<DateTime<Utc>>,
}

/// Erases the member on behalf of `cause`, or finds that it was erased already. Either way the
/// answer is the first erasure's receipt, so a retried or repeated erasure answers the same.
pub async fn erase(
    commands: &CommandService,
    pool: &PgPool,
    cause: &Cause,
    member_id: Uuid,
) -> Result<ErasureReceipt, CommandError> {
    match commands
        .execute_as(cause, member_id, MemberCommand::Erase, None)
        .await
    {
        Ok(_) | Err(CommandError::Rejected(MemberError::MemberErased)) => {}
        Err(other) => return Err(other),
    }
    receipt(pool, member_id)
        .await
        .map_err(|e| CommandError::Unavailable(Box::new(e)))?
        .ok_or_else(|| {
            // The trigger writes the receipt with the event: an erased member without one is a
            // store written around the trigger.
            CommandError::Internal("an erased member has no erasure receipt".into())
        })
}

/// The receipt of the member's erasure, if it was erased.
pub async fn receipt(pool: &PgPool, member_id: Uuid) -> sqlx::Result<Option<ErasureReceipt>> {
    let Some((version, accepted_at, purged_at)) =
        sqlx::query_as::<_, (i64, DateTime<Utc>, Option<DateTime<Utc>>)>(
            "SELECT version, accepted_at, purged_at FROM member_erasures WHERE member_id = $1",
        )
        .bind(member_id)
        .fetch_optional(pool)
        .await?
    else {
        return Ok(None);
    };
    let applied = sqlx::query_as::<_, (String, DateTime<Utc>)>(
        "SELECT target, applied_at FROM erasure_applications
         WHERE member_id = $1 ORDER BY target",
    )
    .bind(member_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(ErasureReceipt {
        member_id,
        accepted_at,
        version: version as u64,
        applied,
        purged_at,
    }))
}

/// Records that `target` applied the erasure of these members (its store acknowledged the batch
/// holding their `MemberErased` records). The first application counts; repeats change nothing.
pub async fn record_applied(pool: &PgPool, target: &str, members: &[Uuid]) -> sqlx::Result<()> {
    if members.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO erasure_applications (member_id, target)
         SELECT m, $2 FROM unnest($1::uuid[]) AS m
         ON CONFLICT (member_id, target) DO NOTHING",
    )
    .bind(members)
    .bind(target)
    .execute(pool)
    .await?;
    Ok(())
}

/// Redacts the identity values of erased members whose erasure every relay has published
/// (migration 0008, `member_purge_erasures`). Returns how many members were purged. The relay
/// calls it after storing a checkpoint.
pub async fn purge_published(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT member_purge_erasures()")
        .fetch_one(pool)
        .await
}

/// Whether the member was erased (its receipt exists).
pub async fn is_erased(pool: &PgPool, member_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM member_erasures WHERE member_id = $1)")
        .bind(member_id)
        .fetch_one(pool)
        .await
}

/// A sink that records, after its store acknowledged a batch, when the store applied the
/// erasures in it (the receipt's per-store times). A batch with an erasure whose time cannot be
/// recorded (the event store is down) fails as unavailable and is applied again later (applying
/// is idempotent), so a receipt never says a store has not applied an erasure it has, nor the
/// reverse. Batches without erasures never touch the event store.
pub struct ErasureReceipts {
    inner: std::sync::Arc<dyn member_projections::Sink>,
    pool: PgPool,
}

impl ErasureReceipts {
    pub fn wrap(
        inner: std::sync::Arc<dyn member_projections::Sink>,
        pool: PgPool,
    ) -> std::sync::Arc<dyn member_projections::Sink> {
        std::sync::Arc::new(Self { inner, pool })
    }
}

#[async_trait::async_trait]
impl member_projections::Sink for ErasureReceipts {
    fn target(&self) -> &str {
        self.inner.target()
    }

    async fn apply(
        &self,
        records: &[member_projections::MemberRecord],
    ) -> Result<(), member_projections::SinkError> {
        self.inner.apply(records).await?;
        let erased: Vec<Uuid> = records
            .iter()
            .filter(|r| r.event.event_type == member_domain::MemberEvent::ERASED)
            .map(|r| r.event.member_id)
            .collect();
        record_applied(&self.pool, self.inner.target(), &erased)
            .await
            .map_err(|e| member_projections::SinkError::unavailable(self.inner.target(), e))
    }

    async fn close(&self) -> Result<(), member_projections::SinkError> {
        self.inner.close().await
    }
}
