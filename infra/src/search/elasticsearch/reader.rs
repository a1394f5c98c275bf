//! Reading: a member by id (a routed get), a member by identity (a routed search of the identity
//! index for the holder, then the holder's document by id). Both touch one shard.

use ::elasticsearch::http::StatusCode;
use ::elasticsearch::{GetParts, SearchParts};
use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, SinkError};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{error_type, ElasticsearchIndex, EsError};

/// The lookup of an identity's entry: its id in filter context (no scoring), one hit at most
/// (an identity has one entry), no sorting, no total.
pub fn identity_search(key: &IdentityKey) -> Value {
    json!({
        "size": 1,
        "track_total_hits": false,
        "query": {
            "bool": {
                "filter": [
                    { "ids": { "values": [key.to_string()] } }
                ]
            }
        }
    })
}

#[derive(Deserialize)]
struct Stored {
    doc: MemberDocument,
}

#[derive(Deserialize)]
struct GetResponse {
    found: bool,
    #[serde(rename = "_source")]
    source: Option<Stored>,
}

#[derive(Deserialize)]
struct SearchResponse {
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(rename = "_source")]
    source: Entry,
}

/// An identity entry as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Entry {
    /// The holder; `None` for a release.
    #[serde(default)]
    pub member_id: Option<Uuid>,
    pub generation: u64,
}

/// What a member's document says about its claim on `key`, against the entry's generation.
enum Claim {
    /// Holds it at the entry's generation or later: the answer.
    Holds,
    /// Released it after the entry's generation: the entry is behind, nobody holds it.
    Released,
    /// Says nothing as new as the entry: the document is behind the entry.
    Behind,
}

fn claim(doc: &MemberDocument, key: &IdentityKey, generation: u64) -> Claim {
    if doc.generation_of(key).is_some_and(|g| g >= generation) {
        Claim::Holds
    } else if doc.released_at(key).is_some_and(|g| g > generation) {
        Claim::Released
    } else {
        Claim::Behind
    }
}

impl ElasticsearchIndex {
    /// The raw answer of the identity lookup (the routed search), for tests and operations that
    /// inspect `_shards`.
    pub async fn identity_lookup_response(&self, key: &IdentityKey) -> Result<Value, SinkError> {
        let routing = key.to_string();
        let response = self
            .client
            .search(SearchParts::Index(&[&self.identity_index]))
            .routing(&[routing.as_str()])
            .allow_partial_search_results(false)
            .body(identity_search(key))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("search", response).await);
        }
        self.read_json("search", response).await
    }

    /// The stored entry of `key`, if any.
    pub async fn identity_entry(&self, key: &IdentityKey) -> Result<Option<Entry>, SinkError> {
        let body = self.identity_lookup_response(key).await?;
        let body: SearchResponse = serde_json::from_value(body).map_err(|e| {
            let error = EsError::Response {
                what: "search",
                reason: format!("{:?} error", e.classify()),
            };
            SinkError::corrupt(self.cluster.target(), error.to_string())
        })?;
        Ok(body.hits.hits.into_iter().next().map(|h| h.source))
    }

    async fn get(
        &self,
        member_id: Uuid,
        realtime: bool,
    ) -> Result<Option<MemberDocument>, SinkError> {
        let id = member_id.to_string();
        let response = self
            .client
            .get(GetParts::IndexId(&self.index, &id))
            .routing(&id)
            .realtime(realtime)
            ._source_includes(&["doc"])
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        let status = response.status_code();
        if status == StatusCode::NOT_FOUND {
            // `{"found": false}` is an absent document; an error body (a missing index) is not.
            let body: Value = self.read_json("get", response).await?;
            if body.get("found") == Some(&Value::Bool(false)) {
                return Ok(None);
            }
            return Err(self.unavailable(EsError::Status {
                what: "get",
                status: status.as_u16(),
                error_type: error_type(&body),
            }));
        }
        if !status.is_success() {
            return Err(self.failed("get", response).await);
        }
        let body: GetResponse = self.read_json("get", response).await?;
        match (body.found, body.source) {
            (true, Some(stored)) => Ok(Some(stored.doc)),
            (true, None) => Err(SinkError::corrupt(
                self.cluster.target(),
                "get: found without a source",
            )),
            (false, _) => Ok(None),
        }
    }
}

#[async_trait]
impl MemberReader for ElasticsearchIndex {
    fn target(&self) -> &str {
        self.cluster.target()
    }

    /// Near-real-time like searches (and like the tantivy adapter): a real-time get of a
    /// document not yet refreshed makes Elasticsearch refresh the shard, which the order path's
    /// read rate must not trigger.
    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        self.get(member_id, false).await
    }

    /// The identity's entry names the holder at the highest generation the cluster has applied,
    /// however often the identity moved (one entry per identity: no tombstones to page through).
    /// The holder's document is refreshed on its own schedule, so it can be behind its entry for
    /// up to one refresh interval; then one real-time get settles it.
    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let Some(entry) = self.identity_entry(key).await? else {
            return Ok(None);
        };
        let Some(member_id) = entry.member_id else {
            return Ok(None);
        };
        let mut doc = self.get(member_id, false).await?;
        let behind = doc
            .as_ref()
            .is_none_or(|d| matches!(claim(d, key, entry.generation), Claim::Behind));
        if behind {
            doc = self.get(member_id, true).await?;
        }
        Ok(doc.filter(|d| !matches!(claim(d, key, entry.generation), Claim::Released)))
    }
}
