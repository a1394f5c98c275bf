//! The one-time rewrite of an event store written before encryption (`member keys migrate`):
//! no value may stay in the clear in the log, so upcasting on read is not enough
//! (docs/decisions/0033).
//!
//! - [`owners`]: `identity_owners` rows keyed by an identity become keyed by its hash. The
//!   command API runs it when it starts, before it accepts a write: a bind keyed by the hash
//!   must meet the same identity's row written by an older binary.
//! - [`events`]: every bind and unbind with a value in the clear is sealed with its member's
//!   key (created if the member has none), member by member, a batch per transaction; request
//!   hashes become keyed. Safe beside a running system and resumable: a batch is all or nothing,
//!   and a second run finds nothing to do.
//! - [`idempotency`]: the stored request hashes become keyed.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::payload::{self, ERASED};
use super::{Vault, VaultError};
use crate::event_store::AGGREGATE_TYPE;

/// The prefix of a keyed request hash ([`Vault::request_hash`]); a hash without it was written
/// before encryption.
pub const KEYED_HASH_PREFIX: &str = "k1:";

/// Members per transaction of [`events`].
const MEMBERS_PER_BATCH: i64 = 500;

/// What a rewrite changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub owners: u64,
    pub members: u64,
    pub events: u64,
    pub idempotency_records: u64,
}

impl Vault {
    /// The keyed form of an unkeyed request digest, as stored (prefixed).
    pub fn keyed_request_hash(&self, digest: &str) -> String {
        format!("{KEYED_HASH_PREFIX}{}", self.request_hash(digest))
    }
}

/// Rekeys the `identity_owners` rows written before encryption (keyed `kind:value`; a hash has
/// no `:`), in one transaction that locks the table against binds meanwhile.
pub async fn owners(pool: &PgPool, vault: &Vault) -> Result<u64, VaultError> {
    // Checked without a lock first: once rekeyed, a start takes no lock on the table binds use.
    let any: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM identity_owners WHERE identity_key LIKE '%:%')",
    )
    .fetch_one(pool)
    .await?;
    if !any {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE identity_owners IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let plain: Vec<String> = sqlx::query_scalar(
        "SELECT identity_key FROM identity_owners WHERE identity_key LIKE '%:%'",
    )
    .fetch_all(&mut *tx)
    .await?;
    if plain.is_empty() {
        return Ok(0);
    }
    let mut hashed = Vec::with_capacity(plain.len());
    let mut old = Vec::with_capacity(plain.len());
    for key in plain {
        // The stored text is the identity key's canonical form, which the hash is taken of.
        hashed.push(vault.identity_ref_of_text(&key));
        old.push(key);
    }
    let done = sqlx::query(
        "UPDATE identity_owners o SET identity_key = r.hashed
         FROM unnest($1::text[], $2::text[]) AS r(old, hashed)
         WHERE o.identity_key = r.old",
    )
    .bind(&old)
    .bind(&hashed)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
}

/// Seals every value still in the clear in `events`, `on_batch` told after each batch.
pub async fn events(
    pool: &PgPool,
    vault: &Vault,
    mut on_batch: impl FnMut(Rewritten),
) -> Result<Rewritten, VaultError> {
    let mut total = Rewritten::default();
    let mut after = String::new();
    loop {
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT aggregate_id FROM events
             WHERE aggregate_type = $1 AND aggregate_id > $2
               AND ((event_type IN ('IdentityBound', 'IdentityUnbound')
                     AND (payload::jsonb -> event_type -> 'identity') ? 'value'
                     AND (payload::jsonb -> event_type -> 'identity' ->> 'value') <> $4)
                    OR (metadata::jsonb ? 'request_hash'
                        AND NOT starts_with(metadata::jsonb ->> 'request_hash', $5)))
             ORDER BY aggregate_id LIMIT $3",
        )
        .bind(AGGREGATE_TYPE)
        .bind(&after)
        .bind(MEMBERS_PER_BATCH)
        .bind(ERASED)
        .bind(KEYED_HASH_PREFIX)
        .fetch_all(pool)
        .await?;
        let Some(last) = members.last() else {
            return Ok(total);
        };
        after = last.clone();
        let events = rewrite_members(pool, vault, &members).await?;
        total.members += members.len() as u64;
        total.events += events;
        on_batch(total);
    }
}

async fn rewrite_members(
    pool: &PgPool,
    vault: &Vault,
    members: &[String],
) -> Result<u64, VaultError> {
    let mut tx = pool.begin().await?;
    // Members without a key get one; a command that created one meanwhile wins (its events are
    // sealed with it), and the batch uses whichever is stored.
    let mut ids = Vec::new();
    let mut key_ids = Vec::new();
    let mut wrapped = Vec::new();
    for member in members {
        let (_, text) = vault.new_data_key(member);
        let (key_id, b64) = text.split_once(':').expect("key_id:wrapped");
        ids.push(member.clone());
        key_ids.push(key_id.to_owned());
        wrapped.push(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("just encoded"),
        );
    }
    sqlx::query(
        "INSERT INTO member_keys (member_id, key_id, wrapped)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
         ON CONFLICT (member_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&key_ids)
    .bind(&wrapped)
    .execute(&mut *tx)
    .await?;
    let stored: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT member_id, key_id, wrapped FROM member_keys WHERE member_id = ANY($1) FOR SHARE",
    )
    .bind(members)
    .fetch_all(&mut *tx)
    .await?;
    let mut keys = HashMap::new();
    for (member, key_id, wrapped) in stored {
        let key = vault.unwrap(&member, &key_id, &wrapped)?;
        keys.insert(member, key);
    }

    let rows: Vec<(i64, String, Value, Value)> = sqlx::query_as(
        "SELECT position, aggregate_id, payload::jsonb, metadata::jsonb FROM events
         WHERE aggregate_type = $1 AND aggregate_id = ANY($2) FOR UPDATE",
    )
    .bind(AGGREGATE_TYPE)
    .bind(members)
    .fetch_all(&mut *tx)
    .await?;
    let mut positions = Vec::new();
    let mut payloads = Vec::new();
    let mut metadatas = Vec::new();
    for (position, member, mut payload, metadata) in rows {
        let mut metadata: Map<String, Value> = match metadata {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut changed = false;
        let erased = payload::identity(&payload)
            .and_then(|i| i.get("value"))
            .is_some_and(|v| v == ERASED);
        if payload::has_plaintext(&payload) && !erased {
            let key = keys
                .get(&member)
                .expect("every member of the batch has a key");
            vault.seal_event(&member, &mut payload, &mut metadata, key);
            changed = true;
        }
        if let Some(Value::String(hash)) = metadata.get("request_hash") {
            if !hash.starts_with(KEYED_HASH_PREFIX) {
                let keyed = vault.keyed_request_hash(hash);
                metadata.insert("request_hash".to_owned(), Value::String(keyed));
                changed = true;
            }
        }
        if changed {
            positions.push(position);
            payloads.push(payload.to_string());
            metadatas.push(Value::Object(metadata).to_string());
        }
    }
    let done = sqlx::query(
        "UPDATE events e SET payload = r.payload::jsonb::json, metadata = r.metadata::jsonb::json
         FROM unnest($1::bigint[], $2::text[], $3::text[]) AS r(position, payload, metadata)
         WHERE e.position = r.position",
    )
    .bind(&positions)
    .bind(&payloads)
    .bind(&metadatas)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(done)
}

/// Keys the request hashes of idempotency records stored before encryption.
pub async fn idempotency(pool: &PgPool, vault: &Vault) -> Result<u64, VaultError> {
    let mut total = 0;
    loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT key, request_hash FROM idempotency_keys
             WHERE NOT starts_with(request_hash, $1) LIMIT 1000",
        )
        .bind(KEYED_HASH_PREFIX)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(total);
        }
        let (keys, hashes): (Vec<String>, Vec<String>) = rows
            .into_iter()
            .map(|(key, hash)| (key, vault.keyed_request_hash(&hash)))
            .unzip();
        total += sqlx::query(
            "UPDATE idempotency_keys k SET request_hash = r.hash
             FROM unnest($1::text[], $2::text[]) AS r(key, hash)
             WHERE k.key = r.key AND NOT starts_with(k.request_hash, $3)",
        )
        .bind(&keys)
        .bind(&hashes)
        .bind(KEYED_HASH_PREFIX)
        .execute(pool)
        .await?
        .rows_affected();
    }
}

/// The whole rewrite: owners, events, idempotency records.
pub async fn all(
    pool: &PgPool,
    vault: &Vault,
    on_batch: impl FnMut(Rewritten),
) -> Result<Rewritten, VaultError> {
    let owners = owners(pool, vault).await?;
    let mut done = events(pool, vault, on_batch).await?;
    done.owners = owners;
    done.idempotency_records = idempotency(pool, vault).await?;
    Ok(done)
}
