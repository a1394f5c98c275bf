//! Folding the event store into member documents: the truth every read store is compared with
//! (convergence tests, `member verify`, `member rebuild`).

use std::collections::HashMap;

use futures::TryStreamExt;
use member_domain::MemberEvent;
use member_projections::{MemberDocument, MemberFold};
use sqlx::PgPool;
use uuid::Uuid;

/// An event of the store could not be folded.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("event store: {0}")]
    Store(#[from] sqlx::Error),
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
);

/// Streams every member of the store, in member-id order, folded to its current document, and
/// hands each to `visit`. Memory stays bounded by one member's history.
pub async fn for_each_document(
    pool: &PgPool,
    mut visit: impl FnMut(MemberDocument),
) -> Result<u64, ReplayError> {
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT aggregate_id, sequence, payload::jsonb, metadata::jsonb, recorded_at FROM events
         WHERE aggregate_type = 'Member' ORDER BY aggregate_id, sequence",
    )
    .fetch(pool);
    let mut current: Option<(String, MemberFold)> = None;
    let mut members = 0;
    while let Some((id, sequence, payload, metadata, recorded_at)) = rows.try_next().await? {
        let corrupt = |reason: String| ReplayError::Corrupt {
            member_id: id.clone(),
            sequence,
            reason,
        };
        if current.as_ref().is_none_or(|(cur, _)| cur != &id) {
            if let Some((_, fold)) = current.take() {
                visit(fold.document());
                members += 1;
            }
            let member_id = Uuid::parse_str(&id).map_err(|e| corrupt(e.to_string()))?;
            current = Some((id.clone(), MemberFold::new(member_id)));
        }
        let event: MemberEvent =
            serde_json::from_value(payload).map_err(|e| corrupt(e.to_string()))?;
        let generation = metadata
            .get("identity_generation")
            .and_then(|g| g.as_str())
            .and_then(|g| g.parse().ok());
        let (_, fold) = current.as_mut().expect("set above");
        fold.apply(sequence as u64, event, recorded_at, generation)
            .map_err(|e| corrupt(e.to_string()))?;
    }
    if let Some((_, fold)) = current {
        visit(fold.document());
        members += 1;
    }
    Ok(members)
}

/// Every member's current document, in memory (for tests and small stores).
pub async fn all_documents(pool: &PgPool) -> Result<HashMap<Uuid, MemberDocument>, ReplayError> {
    let mut all = HashMap::new();
    for_each_document(pool, |doc| {
        all.insert(doc.member_id, doc);
    })
    .await?;
    Ok(all)
}
