//! Looking over a whole center, for `member verify`: which members it holds documents for, and
//! deleting what is wrong before repair writes the truth through the guarded path.

use member_domain::IdentityKey;
use member_projections::SinkError;
use uuid::Uuid;

use super::{document_key, identity_key, RedisCenter};

/// Keys asked for per `SCAN` round trip.
const SCAN_COUNT: usize = 1000;

impl RedisCenter {
    /// Every member with a document key (`m:{<id>}`), found with `SCAN` (non-blocking for the
    /// server, unlike `KEYS`). A key that is not a member document (fences, other data) is skipped.
    pub async fn member_ids(&self) -> Result<Vec<Uuid>, SinkError> {
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut ids = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("m:{*}")
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(e))?;
            ids.extend(keys.iter().filter_map(|k| parse_document_key(k)));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes the documents (with their fences) and the identity entries.
    pub async fn remove(
        &self,
        members: &[Uuid],
        identities: &[IdentityKey],
    ) -> Result<(), SinkError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = members
            .iter()
            .flat_map(|&m| [document_key(m), super::fence_key(m)])
            .chain(identities.iter().map(identity_key))
            .collect();
        // One key per DEL: in a cluster the keys live in different slots.
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.del(key).ignore();
        }
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }
}

/// `m:{<uuid>}` -> the uuid; anything else (a fence `m:{<uuid>}:fence`) -> None.
fn parse_document_key(key: &str) -> Option<Uuid> {
    let inner = key.strip_prefix("m:{")?.strip_suffix('}')?;
    Uuid::parse_str(inner).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_document_keys_name_members() {
        let id = Uuid::new_v4();
        assert_eq!(parse_document_key(&document_key(id)), Some(id));
        assert_eq!(parse_document_key(&super::super::fence_key(id)), None);
        assert_eq!(parse_document_key("m:{not-a-uuid}"), None);
        assert_eq!(parse_document_key("i:{x}"), None);
    }
}
