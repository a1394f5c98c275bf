//! Writing a batch: one bulk request with the newest document of each member and the newest
//! entry of each identity the batch changed ([`CompactBatch`]), all externally versioned.

use ::elasticsearch::http::headers::{HeaderValue, CONTENT_TYPE};
use ::elasticsearch::http::StatusCode;
use ::elasticsearch::params::VersionType;
use ::elasticsearch::{BulkOperation, BulkParts};
use async_trait::async_trait;
use member_projections::batch::{CompactBatch, IdentityEntry};
use member_projections::{MemberDocument, MemberRecord, Sink, SinkError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{retryable, ElasticsearchIndex, EsError};

/// The `_source` of a member document.
pub fn member_source(doc: &MemberDocument) -> Value {
    json!({
        "member_id": doc.member_id,
        "status": doc.status,
        "doc": doc,
    })
}

/// The `_source` of an identity entry: the holder, or no `member_id` for a release.
pub fn identity_source(entry: &IdentityEntry<'_>) -> Value {
    match entry.member_id {
        Some(member) => json!({ "member_id": member, "generation": entry.generation }),
        None => json!({ "generation": entry.generation }),
    }
}

#[derive(Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

impl ElasticsearchIndex {
    /// The bulk operations of a batch: member documents first, then identity entries, each
    /// routed by its own key and versioned externally.
    fn operations(&self, batch: &CompactBatch<'_>) -> Vec<BulkOperation<Value>> {
        let members = batch.documents.iter().map(|doc| {
            let id = doc.member_id.to_string();
            BulkOperation::index(member_source(doc))
                .index(self.index.as_str())
                .id(id.as_str())
                .routing(id.as_str())
                .version(doc.version as i64)
                .version_type(VersionType::External)
                .into()
        });
        let identities = batch.identities.iter().map(|entry| {
            let key = entry.key.to_string();
            BulkOperation::index(identity_source(entry))
                .index(self.identity_index.as_str())
                .id(key.as_str())
                .routing(key.as_str())
                .version(entry.generation as i64)
                .version_type(VersionType::External)
                .into()
        });
        // An erased member's entries are deleted unless a later holder's generation is stored:
        // `external_gte` deletes when the stored version is at most the release's generation.
        let erased = batch.erased.iter().map(|entry| {
            let key = entry.key.to_string();
            BulkOperation::delete(key.as_str())
                .index(self.identity_index.as_str())
                .routing(key.as_str())
                .version(entry.generation as i64)
                .version_type(VersionType::ExternalGte)
                .into()
        });
        members.chain(identities).chain(erased).collect()
    }
}

#[async_trait]
impl Sink for ElasticsearchIndex {
    fn target(&self) -> &str {
        self.cluster.target()
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        let batch = CompactBatch::of(records);
        if batch.is_empty() {
            return Ok(());
        }
        let response = self
            .client
            .bulk(BulkParts::None)
            .filter_path(&["errors", "items.*.status", "items.*.error.type"])
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            )
            .body(self.operations(&batch))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("bulk", response).await);
        }
        let body: BulkResponse = self.read_json("bulk", response).await?;
        if !body.errors {
            return Ok(());
        }
        let total = body.items.len();
        let failures: Vec<&BulkItem> = body
            .items
            .iter()
            .flat_map(|item| item.values())
            // 409: the stored version is already as new (the external version guard).
            .filter(|item| !(200..300).contains(&item.status) && item.status != 409)
            // 404 without an error: an erased member's entry that was not there to delete.
            .filter(|item| !(item.status == 404 && item.error.is_none()))
            .collect();
        let Some(first) = failures.first() else {
            return Ok(());
        };
        let error_type = first
            .error
            .as_ref()
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let all_retryable = failures
            .iter()
            .all(|item| StatusCode::from_u16(item.status).is_ok_and(retryable));
        let error = EsError::Items {
            failed: failures.len(),
            total,
            status: first.status,
            error_type,
        };
        tracing::warn!(
            target: "member::search",
            cluster = self.cluster.target(),
            %error,
            "bulk refused"
        );
        // The whole batch fails: the projector keeps its offset and retries it; the items that
        // were applied answer 409 then.
        Err(if all_retryable {
            self.unavailable(error)
        } else {
            SinkError::corrupt(self.cluster.target(), error.to_string())
        })
    }
}
