//! The `member_keys` table: each member's data key, wrapped by a master key (migration 0010).
//!
//! A new member's key reaches the table through its first event's metadata (the append's
//! trigger moves it there, in the append's transaction); the purge of an erasure deletes it.
//! Everything else reads it here.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use sqlx::PgPool;

use super::cipher::{self, Key};
use super::{Vault, VaultError};

impl Vault {
    /// The data keys of `members` that exist (an erased member's was destroyed; a member written
    /// before encryption may have none yet), from the cache or one query for the rest.
    pub async fn data_keys(
        &self,
        pool: &PgPool,
        members: &[&str],
    ) -> Result<HashMap<String, Arc<Key>>, VaultError> {
        let mut found = HashMap::with_capacity(members.len());
        let mut missing = Vec::new();
        for &member in members {
            match self.cached(member) {
                Some(key) => {
                    found.insert(member.to_owned(), key);
                }
                None => missing.push(member),
            }
        }
        if missing.is_empty() {
            return Ok(found);
        }
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT member_id, key_id, wrapped FROM member_keys WHERE member_id = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(pool)
        .await?;
        for (member, key_id, wrapped) in rows {
            let key = Arc::new(self.unwrap(&member, &key_id, &wrapped)?);
            self.remember(&member, key.clone());
            found.insert(member, key);
        }
        Ok(found)
    }

    /// The data key of one member, if it has one.
    pub async fn data_key(
        &self,
        pool: &PgPool,
        member: &str,
    ) -> Result<Option<Arc<Key>>, VaultError> {
        Ok(self.data_keys(pool, &[member]).await?.remove(member))
    }

    /// Opens the payloads of stored events in place, `(member id, payload)` each, reading the
    /// keys of their members once.
    pub async fn open_payloads<'a>(
        &self,
        pool: &PgPool,
        events: impl IntoIterator<Item = (&'a str, &'a mut Value)>,
    ) -> Result<(), VaultError> {
        let mut events: Vec<(&str, &mut Value)> = events
            .into_iter()
            .filter(|(_, payload)| {
                super::payload::identity(payload).is_some_and(|i| i.contains_key("sealed"))
            })
            .collect();
        if events.is_empty() {
            return Ok(());
        }
        let mut members: Vec<&str> = events.iter().map(|(m, _)| *m).collect();
        members.sort_unstable();
        members.dedup();
        let keys = self.data_keys(pool, &members).await?;
        for (member, payload) in events.iter_mut() {
            self.open_event(member, payload, keys.get(*member).map(|k| k.as_ref()))?;
        }
        Ok(())
    }

    /// Makes a data key the member's own in this process (after its append committed).
    pub fn keep(&self, member: &str, key: Arc<Key>) {
        self.remember(member, key);
    }

    /// Re-wraps up to `limit` data keys not wrapped by the current master key with it (`member
    /// keys rotate`, batch by batch). Returns how many were re-wrapped; 0 when none is left.
    pub async fn rotate_batch(&self, pool: &PgPool, limit: i64) -> Result<u64, VaultError> {
        let current = self.current_master_key_id().to_owned();
        let rows: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT member_id, key_id, wrapped FROM member_keys WHERE key_id <> $1 LIMIT $2",
        )
        .bind(&current)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        let master = self
            .master(&current)
            .expect("the current master key is configured");
        let mut ids = Vec::with_capacity(rows.len());
        let mut old_ids = Vec::with_capacity(rows.len());
        let mut wrapped = Vec::with_capacity(rows.len());
        for (member, key_id, old) in rows {
            let key = self.unwrap(&member, &key_id, &old)?;
            wrapped.push(cipher::wrap(master, &member, &key));
            ids.push(member);
            old_ids.push(key_id);
        }
        // Guarded by the old key id: a key deleted or re-wrapped meanwhile is left alone.
        let done = sqlx::query(
            "UPDATE member_keys k SET key_id = $1, wrapped = r.wrapped, rotated_at = now()
             FROM unnest($2::text[], $3::text[], $4::bytea[]) AS r(member_id, old_key_id, wrapped)
             WHERE k.member_id = r.member_id AND k.key_id = r.old_key_id",
        )
        .bind(&current)
        .bind(&ids)
        .bind(&old_ids)
        .bind(&wrapped)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(done)
    }

    /// How many data keys each master key wraps (for `member keys status`).
    pub async fn keys_by_master(pool: &PgPool) -> Result<Vec<(String, i64)>, VaultError> {
        Ok(sqlx::query_as(
            "SELECT key_id, count(*) FROM member_keys GROUP BY key_id ORDER BY key_id",
        )
        .fetch_all(pool)
        .await?)
    }
}
