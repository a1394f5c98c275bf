//! Folding the event store into member documents: the truth every read store is compared with
//! (convergence tests, `member verify`, `member rebuild`).

use std::collections::HashMap;

use futures::TryStreamExt;
use member_domain::MemberEvent;
use member_projections::{MemberDocument, MemberFold};
use sqlx::PgPool;
use uuid::Uuid;

use super::vault::{cipher::Key, Vault};

/// An event of the store could not be folded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("stopped by the consumer of the documents: {0}")]
    Stopped(String),
    #[error("member {member_id} sequence {sequence}: {reason}")]
    Corrupt {
        member_id: String,
        sequence: i64,
        reason: String,
    },
}

type Row = (
    String,
    i64,
    serde_json::Value,
    serde_json::Value,
    chrono::DateTime<chrono::Utc>,
    // The member's data key, wrapped, and the master key that wrapped it (none once erased).
    Option<String>,
    Option<Vec<u8>>,
);

/// Streams every member of the store, in member-id order, folded to its current document, and
/// hands each to `visit`. Memory stays bounded by one member's history.
pub async fn for_each_document(
    pool: &PgPool,
    vault: &Vault,
    mut visit: impl FnMut(MemberDocument),
) -> Result<u64, ReplayError> {
    fold_rows(pool, vault, None, |doc| {
        visit(doc);
        async { Ok(()) }
    })
    .await
}

/// Like [`for_each_document`], handing the documents over in batches of up to `size` to an
/// async `visit` (which may wait, e.g. on a full channel to a writer); an error from `visit`
/// stops the replay.
pub async fn for_each_batch<F, Fut>(
    pool: &PgPool,
    vault: &Vault,
    size: usize,
    mut visit: F,
) -> Result<u64, ReplayError>
where
    F: FnMut(Vec<MemberDocument>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ReplayError>>,
{
    let size = size.max(1);
    let batch = std::cell::RefCell::new(Vec::with_capacity(size));
    let members = fold_rows(pool, vault, None, |doc| {
        let mut b = batch.borrow_mut();
        b.push(doc);
        let full = (b.len() >= size).then(|| std::mem::replace(&mut *b, Vec::with_capacity(size)));
        drop(b);
        let sent = full.map(&mut visit);
        async move {
            match sent {
                Some(f) => f.await,
                None => Ok(()),
            }
        }
    })
    .await?;
    let rest = batch.into_inner();
    if !rest.is_empty() {
        visit(rest).await?;
    }
    Ok(members)
}

/// The current document of one member (`None` if the store has no event of it).
pub async fn document_of(
    pool: &PgPool,
    vault: &Vault,
    member_id: Uuid,
) -> Result<Option<MemberDocument>, ReplayError> {
    let mut found = None;
    fold_rows(pool, vault, Some(member_id), |doc| {
        found = Some(doc);
        async { Ok(()) }
    })
    .await?;
    Ok(found)
}

/// The number of members in the store (for progress bars).
pub async fn member_count(pool: &PgPool) -> Result<u64, ReplayError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = $1 AND sequence = 1",
    )
    .bind(super::AGGREGATE_TYPE)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// Who holds each identity now, from the table of identity owners the append maintains (keyed
/// by the identities' keyed hashes; `None`: nobody).
pub async fn holders_of(
    pool: &PgPool,
    vault: &Vault,
    keys: &[member_domain::IdentityKey],
) -> Result<HashMap<member_domain::IdentityKey, Uuid>, ReplayError> {
    let by_text: HashMap<String, &member_domain::IdentityKey> =
        keys.iter().map(|k| (vault.identity_ref(k), k)).collect();
    let texts: Vec<&String> = by_text.keys().collect();
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT identity_key, member_id FROM identity_owners
         WHERE identity_key = ANY($1) AND member_id IS NOT NULL",
    )
    .bind(&texts)
    .fetch_all(pool)
    .await?;
    let mut holders = HashMap::new();
    for (key, member) in rows {
        if let (Some(k), Ok(m)) = (by_text.get(&key), Uuid::parse_str(&member)) {
            holders.insert((*k).clone(), m);
        }
    }
    Ok(holders)
}

async fn fold_rows<F, Fut>(
    pool: &PgPool,
    vault: &Vault,
    only: Option<Uuid>,
    mut visit: F,
) -> Result<u64, ReplayError>
where
    F: FnMut(MemberDocument) -> Fut,
    Fut: std::future::Future<Output = Result<(), ReplayError>>,
{
    let mut rows = match only {
        None => sqlx::query_as::<_, Row>(
            "SELECT e.aggregate_id, e.sequence, e.payload::jsonb, e.metadata::jsonb, e.recorded_at,
                    k.key_id, k.wrapped
             FROM events e LEFT JOIN member_keys k ON k.member_id = e.aggregate_id
             WHERE e.aggregate_type = $1 ORDER BY e.aggregate_id, e.sequence",
        )
        .bind(super::AGGREGATE_TYPE)
        .fetch(pool),
        Some(id) => sqlx::query_as::<_, Row>(
            "SELECT e.aggregate_id, e.sequence, e.payload::jsonb, e.metadata::jsonb, e.recorded_at,
                    k.key_id, k.wrapped
             FROM events e LEFT JOIN member_keys k ON k.member_id = e.aggregate_id
             WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 ORDER BY e.sequence",
        )
        .bind(super::AGGREGATE_TYPE)
        .bind(id.to_string())
        .fetch(pool),
    };
    let mut current: Option<(String, MemberFold, Option<Key>)> = None;
    let mut members = 0;
    while let Some((id, sequence, mut payload, metadata, recorded_at, key_id, wrapped)) =
        rows.try_next().await?
    {
        let corrupt = |reason: String| ReplayError::Corrupt {
            member_id: id.clone(),
            sequence,
            reason,
        };
        if current.as_ref().is_none_or(|(cur, _, _)| cur != &id) {
            if let Some((_, fold, _)) = current.take() {
                visit(fold.document()).await?;
                members += 1;
            }
            let member_id = Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?;
            // Each member's key is unwrapped once, for all of its events.
            let key = match (key_id, wrapped) {
                (Some(key_id), Some(wrapped)) => Some(
                    vault
                        .unwrap(&id, &key_id, &wrapped)
                        .map_err(|e| corrupt(e.to_string()))?,
                ),
                _ => None,
            };
            current = Some((id.clone(), MemberFold::new(member_id), key));
        }
        let (_, fold, key) = current.as_mut().expect("set above");
        vault
            .open_event(&id, &mut payload, key.as_ref())
            .map_err(|e| corrupt(e.to_string()))?;
        let event: MemberEvent =
            serde_json::from_value(payload).map_err(|e| corrupt(e.to_string()))?;
        let generation = metadata
            .get("identity_generation")
            .and_then(|g| g.as_str())
            .and_then(|g| g.parse().ok());
        fold.apply(sequence as u64, event, recorded_at, generation)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    if let Some((_, fold, _)) = current {
        visit(fold.document()).await?;
        members += 1;
    }
    Ok(members)
}

/// Every member's current document, in memory (for tests and small stores).
pub async fn all_documents(
    pool: &PgPool,
    vault: &Vault,
) -> Result<HashMap<Uuid, MemberDocument>, ReplayError> {
    let mut all = HashMap::new();
    for_each_document(pool, vault, |doc| {
        all.insert(doc.member_id, doc);
    })
    .await?;
    Ok(all)
}
