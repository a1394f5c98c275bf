//! Reading member documents from the shards: by member id (one shard), by identity (the
//! identity's shard, then the member's shard).

use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, SinkError};
use uuid::Uuid;

use super::{to_sink_error, MysqlShards, TARGET};
use crate::stored::decode_document;

impl MysqlShards {
    /// The member id an identity-index entry names, `None` when there is no entry or it is a
    /// tombstone.
    pub async fn identity_owner(&self, key: &IdentityKey) -> Result<Option<Uuid>, SinkError> {
        let shard = self.map.shard_of_identity(key);
        let sql = format!(
            "SELECT member_id FROM `{}` WHERE identity_key = ?",
            self.set.identity_table(shard)
        );
        let owner: Option<Option<Uuid>> = sqlx::query_scalar(&sql)
            .bind(key.to_string())
            .fetch_optional(self.pool_of_shard(shard))
            .await
            .map_err(to_sink_error)?;
        Ok(owner.flatten())
    }
}

#[async_trait]
impl MemberReader for MysqlShards {
    fn target(&self) -> &str {
        TARGET
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        let shard = self.map.shard_of_member(member_id);
        let sql = format!(
            "SELECT doc FROM `{}` WHERE member_id = ?",
            self.set.member_table(shard)
        );
        let doc: Option<Vec<u8>> = sqlx::query_scalar(&sql)
            .bind(member_id)
            .fetch_optional(self.pool_of_shard(shard))
            .await
            .map_err(to_sink_error)?;
        doc.map(|d| decode_document(TARGET, member_id, &d))
            .transpose()
    }

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let owner = self.identity_owner(key).await?;
        crate::stored::owner_document(self, owner, key).await
    }
}
