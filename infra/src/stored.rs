//! Decoding member documents read back from a store.
//!
//! A document that does not decode, or that is not the requested member's, is `Corrupt`: the
//! store needs an operator (verify and repair), not a retry. Reasons never quote the stored
//! content, nor serde's message (it can quote values): they are personal data.

use member_projections::{MemberDocument, SinkError};
use uuid::Uuid;

/// Decodes the stored document of `member_id`.
pub(crate) fn decode_document(
    target: &str,
    member_id: Uuid,
    bytes: &[u8],
) -> Result<MemberDocument, SinkError> {
    let doc: MemberDocument = serde_json::from_slice(bytes).map_err(|e| {
        SinkError::corrupt(
            target,
            format!(
                "member {member_id}: stored document does not decode ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    if doc.member_id != member_id {
        return Err(SinkError::corrupt(
            target,
            format!(
                "member {member_id}: stored under this id is the document of {}",
                doc.member_id
            ),
        ));
    }
    Ok(doc)
}

/// A lookup through an identity index: the owner's document, served only if it lists the
/// identity. The entry and the document are written separately (another partition, another key
/// with its own expiry), so the entry may be ahead of the document or behind it.
pub(crate) async fn owner_document<R: member_projections::MemberReader + ?Sized>(
    reader: &R,
    owner: Option<Uuid>,
    key: &member_domain::IdentityKey,
) -> Result<Option<MemberDocument>, SinkError> {
    let Some(member_id) = owner else {
        return Ok(None);
    };
    Ok(reader
        .by_id(member_id)
        .await?
        .filter(|doc| doc.generation_of(key).is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_documents_are_reported_without_their_content() {
        let id = Uuid::now_v7();
        let err = decode_document("t", id, br#"{"member_id": "+8613800138000"}"#).unwrap_err();
        let text = format!("{err}");
        assert!(matches!(err, SinkError::Corrupt { .. }));
        assert!(!text.contains("138"), "{text}");
    }
}
