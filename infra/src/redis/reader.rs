//! Reading member documents from a center: by member id (one `HGET`), by identity (one script
//! call that reads the entry and then the member's document on the server: one round trip).

use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, SinkError};
use uuid::Uuid;

use super::{document_key, identity_key, scripts, RedisCenter};
use crate::stored::decode_document;

/// An identity-index entry as read with its member's document.
#[derive(Debug, Clone)]
pub struct IdentityEntry {
    /// The entry's ownership generation.
    pub generation: u64,
    /// The member it names; `None` for a tombstone.
    pub member: Option<Uuid>,
    /// That member's document, when the center holds it.
    pub document: Option<MemberDocument>,
}

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
            Some(m) => self.parse_member(m).map(Some),
        }
    }

    fn parse_member(&self, m: &str) -> Result<Uuid, SinkError> {
        Uuid::parse_str(m).map_err(|_| {
            SinkError::corrupt(&self.target, "an identity entry names no valid member id")
        })
    }

    /// The identity's entry and its member's document, in one round trip (`None`: no entry).
    pub async fn identity_entry(
        &self,
        key: &IdentityKey,
    ) -> Result<Option<IdentityEntry>, SinkError> {
        let mut conn = self.conn.clone();
        let reply: Option<(String, String, Option<Vec<u8>>)> = scripts::BY_IDENTITY
            .key(identity_key(key))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let Some((generation, member, document)) = reply else {
            return Ok(None);
        };
        let generation = generation.parse::<f64>().map_err(|_| {
            SinkError::corrupt(&self.target, "an identity entry has no valid generation")
        })? as u64;
        let member = match member.as_str() {
            "" => None,
            m => Some(self.parse_member(m)?),
        };
        let document = match (member, document) {
            (Some(m), Some(d)) => Some(decode_document(&self.target, m, &d)?),
            _ => None,
        };
        Ok(Some(IdentityEntry {
            generation,
            member,
            document,
        }))
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
        Ok(self
            .identity_entry(key)
            .await?
            .and_then(|entry| entry.document)
            .filter(|doc| doc.generation_of(key).is_some()))
    }
}
