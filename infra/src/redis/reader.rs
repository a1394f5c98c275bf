//! Reading member documents from a center: by member id (one `HGET`), by identity (the entry,
//! then the member's document).

use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, SinkError};
use uuid::Uuid;

use super::{document_key, identity_key, RedisCenter};
use crate::stored::decode_document;

impl RedisCenter {
    /// The member an identity entry names, `None` when there is no entry (never cached, or
    /// expired) or it is a tombstone.
    pub async fn identity_owner(&self, key: &IdentityKey) -> Result<Option<Uuid>, SinkError> {
        let mut conn = self.conn.clone();
        let member: Option<String> = ::redis::cmd("HGET")
            .arg(identity_key(key))
            .arg("m")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        match member.as_deref() {
            None | Some("") => Ok(None),
            Some(m) => Uuid::parse_str(m).map(Some).map_err(|_| {
                SinkError::corrupt(&self.target, "an identity entry names no valid member id")
            }),
        }
    }
}

#[async_trait]
impl MemberReader for RedisCenter {
    fn target(&self) -> &str {
        &self.target
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        let mut conn = self.conn.clone();
        let doc: Option<Vec<u8>> = ::redis::cmd("HGET")
            .arg(document_key(member_id))
            .arg("d")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        doc.map(|d| decode_document(&self.target, member_id, &d))
            .transpose()
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let owner = self.identity_owner(key).await?;
        crate::stored::owner_document(self, owner, key).await
    }
}
