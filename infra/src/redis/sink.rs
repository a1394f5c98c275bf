//! Writing a batch of records to a center, and the query path's cache fill.
//!
//! A batch is compacted (newest document per member, newest entry per identity) and sent as one
//! pipeline of script calls: one round trip per batch. Redis runs the calls one after the other
//! and answers when all ran, so `apply` returns when the batch is in memory, which is as durable
//! as a cache gets (the centers run without persistence; a restarted center is refilled by
//! replay and by fills).

use async_trait::async_trait;
use member_projections::{CompactBatch, MemberDocument, MemberRecord, Sink, SinkError};

use super::scripts::{self, DOCUMENT, FILL, FORGET, IDENTITY};
use super::{document_key, fence_key, identity_key, RedisCenter};

impl RedisCenter {
    /// Writes a document read from a slower store (search, MySQL) after a cache miss, with its
    /// identity entries, unless the center holds a version at least as new or the version fence
    /// says the projector has seen a newer version (the source lags): stale data is never
    /// written back. Returns whether the document was written.
    ///
    /// The document and its fence share a hash slot; each identity entry is its own slot, so the
    /// entries are written by separate (generation-guarded) calls after the document, and only
    /// when the document was accepted. An error after the document was written leaves a
    /// document without (some of) its entries: a later miss by identity fills them again.
    pub async fn fill(&self, doc: &MemberDocument) -> Result<bool, SinkError> {
        let mut conn = self.conn.clone();
        let json = serde_json::to_string(doc).expect("a member document always serializes");
        let outcome: i64 = FILL
            .key(document_key(doc.member_id))
            .key(fence_key(doc.member_id))
            .arg(doc.version)
            .arg(json)
            .arg(self.expiry.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let reason = match outcome {
            1 => None,
            -1 => Some("fence"),
            _ => Some("stored_newer"),
        };
        if let Some(reason) = reason {
            metrics::counter!("cache_fill_refused_total", "target" => self.target.clone(), "reason" => reason)
                .increment(1);
            return Ok(false);
        }
        if !doc.identities.is_empty() {
            let member = doc.member_id.to_string();
            let mut pipe = ::redis::pipe();
            for identity in &doc.identities {
                pipe.invoke_script(
                    IDENTITY
                        .key(identity_key(&identity.key))
                        .arg(identity.generation)
                        .arg(member.as_str())
                        .arg(self.expiry.ttl_ms()),
                )
                .ignore();
            }
            scripts::run_pipeline::<()>(&mut conn, &pipe)
                .await
                .map_err(|e| self.error(e))?;
        }
        metrics::counter!("cache_fill_total", "target" => self.target.clone()).increment(1);
        Ok(true)
    }
}

#[async_trait]
impl Sink for RedisCenter {
    fn target(&self) -> &str {
        &self.target
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        let batch = CompactBatch::of(records);
        if batch.is_empty() {
            return Ok(());
        }
        let (ttl, fence_ttl) = (self.expiry.ttl_ms(), self.expiry.fence_ttl_ms());
        let mut pipe = ::redis::pipe();
        for doc in &batch.documents {
            let json = serde_json::to_string(doc).expect("a member document always serializes");
            pipe.invoke_script(
                DOCUMENT
                    .key(document_key(doc.member_id))
                    .key(fence_key(doc.member_id))
                    .arg(doc.version)
                    .arg(json)
                    .arg(ttl)
                    .arg(fence_ttl),
            )
            .ignore();
        }
        for entry in &batch.identities {
            let member = entry.member_id.map(|m| m.to_string()).unwrap_or_default();
            pipe.invoke_script(
                IDENTITY
                    .key(identity_key(entry.key))
                    .arg(entry.generation)
                    .arg(member)
                    .arg(ttl),
            )
            .ignore();
        }
        for entry in &batch.erased {
            pipe.invoke_script(FORGET.key(identity_key(entry.key)).arg(entry.generation))
                .ignore();
        }
        let mut conn = self.conn.clone();
        scripts::run_pipeline::<()>(&mut conn, &pipe)
            .await
            .map_err(|e| self.error(e))?;
        tracing::debug!(
            target_store = %self.target,
            records = records.len(),
            documents = batch.documents.len(),
            identities = batch.identities.len(),
            erased = batch.erased.len(),
            "redis batch applied"
        );
        Ok(())
    }
}

#[async_trait::async_trait]
impl member_projections::CacheFill for RedisCenter {
    async fn fill(&self, doc: &MemberDocument) -> Result<bool, SinkError> {
        RedisCenter::fill(self, doc).await
    }
}
