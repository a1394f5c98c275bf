//! The Elasticsearch adapter, through the official `elasticsearch` crate: one client per cluster
//! URL, one index (or alias) per cluster named by `search.elasticsearch.index_prefix`.
//!
//! What it relies on from Elasticsearch, and why:
//! - **External versioning** (`version_type: external`, `version` = the document's aggregate
//!   version) makes the version guard Elasticsearch's own compare-and-set, per document, on the
//!   primary shard: no read-modify-write here. A `409` item (the stored version is equal or
//!   higher) is the guard doing its job and counts as success; any other item error fails the
//!   whole batch, which the projector retries (already-applied items then answer `409`).
//! - **Routing by member id** on every write and get (the mapping requires it), so a member's
//!   writes and reads go to one shard.
//! - **Keyword-only mappings** with `dynamic: strict`: ids and identities are exact terms, nothing
//!   is analyzed, and a document with an unexpected field is refused rather than indexed. The
//!   member document itself is kept in `_source` under `doc`, which is not indexed at all.
//! - **Term queries in filter context** for lookups by identity: no scoring, cacheable, and
//!   `allow_partial_search_results=false`, so that a failed shard is an error (the query path
//!   falls back) instead of a silent miss.
//! - **Near-real-time refresh** (`refresh_interval` = `search.refresh_ms`): writes are visible
//!   to searches after the next refresh, and so are gets (`realtime=false`: a real-time get of
//!   an unrefreshed document would make the shard refresh, at the order path's read rate).
//!   Nothing here forces a refresh.
//! - **Durability**: a bulk response comes after the translog was fsynced on the primary and its
//!   replicas (`index.translog.durability: request`, the default), so `apply` returning means
//!   the batch survives a node restart.
//!
//! Errors: transport failures (connection refused, timeout), `429` and `5xx` are
//! [`SinkError::Unavailable`] (retry); anything else Elasticsearch refuses (a mapping conflict,
//! a missing routing) is [`SinkError::Corrupt`] (needs an operator). Messages carry the status and
//! Elasticsearch's error type only, never its reason text, which can quote document values.

pub mod requests;

use std::time::Duration;

use ::elasticsearch::auth::Credentials;
use ::elasticsearch::http::headers::{HeaderValue, CONTENT_TYPE};
use ::elasticsearch::http::response::Response;
use ::elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use ::elasticsearch::http::{StatusCode, Url};
use ::elasticsearch::indices::{
    IndicesCreateParts, IndicesExistsParts, IndicesPutIndexTemplateParts,
};
use ::elasticsearch::params::VersionType;
use ::elasticsearch::{BulkOperation, BulkParts, Elasticsearch, GetParts, SearchParts};
use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, MemberRecord, Sink, SinkError};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{holder_of, latest_per_member, SearchCluster, SearchError};

/// How long one request may take before it counts as `Unavailable`. A bulk of a thousand
/// documents takes well under a second on a healthy cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the index is set up.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The index (or alias) name; also the index template's name.
    pub index: String,
    /// `number_of_shards` of a newly created index.
    pub shards: u32,
    /// `refresh_interval` of a newly created index.
    pub refresh: Duration,
}

/// A cluster's Elasticsearch index; a [`Sink`] and a [`MemberReader`].
pub struct ElasticsearchIndex {
    cluster: SearchCluster,
    client: Elasticsearch,
    index: String,
}

/// What Elasticsearch answered when it did not do what was asked. Status and error type only:
/// Elasticsearch's reason text can quote document values (personal data).
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    #[error("{what}: status {status}, error type {error_type}")]
    Status {
        what: &'static str,
        status: u16,
        error_type: String,
    },
    #[error("bulk: {failed} of {total} items failed, first with status {status}, error type {error_type}")]
    Items {
        failed: usize,
        total: usize,
        status: u16,
        error_type: String,
    },
    #[error("{what}: unreadable response: {reason}")]
    Response { what: &'static str, reason: String },
}

impl ElasticsearchIndex {
    /// Connects to the cluster at `url` (credentials may be given in the URL's user info) and
    /// sets up the index: the index template (created or updated), then the index itself unless
    /// an index or alias of that name exists.
    pub async fn connect(
        url: &str,
        cluster: SearchCluster,
        options: IndexOptions,
    ) -> Result<Self, SearchError> {
        let target = cluster.target();
        if !requests::is_index_name(&options.index) {
            return Err(SearchError::InvalidIndexName {
                target,
                index: options.index.clone(),
            });
        }
        let client = client(url).map_err(|reason| SearchError::InvalidUrl { target, reason })?;
        let this = Self {
            cluster,
            client,
            index: options.index.clone(),
        };
        this.set_up(&options).await?;
        tracing::info!(
            target: "member::search",
            cluster = target,
            index = %this.index,
            "elasticsearch index ready"
        );
        Ok(this)
    }

    pub fn cluster(&self) -> SearchCluster {
        self.cluster
    }

    pub fn index(&self) -> &str {
        &self.index
    }

    /// The client, for calls outside the port (operations, test clean-up).
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    async fn set_up(&self, options: &IndexOptions) -> Result<(), SearchError> {
        let target = self.cluster.target();
        let setup = |reason: String| SearchError::Setup {
            target,
            index: self.index.clone(),
            reason,
        };
        let unavailable = |source| SearchError::Unavailable { target, source };

        let template = requests::index_template(&self.index, options.shards, options.refresh);
        let response = self
            .client
            .indices()
            .put_index_template(IndicesPutIndexTemplateParts::Name(&self.index))
            .body(template)
            .send()
            .await
            .map_err(unavailable)?;
        if !response.status_code().is_success() {
            let (status, error_type) = error_of(response).await;
            return Err(setup(format!(
                "index template: status {status}, error type {error_type}"
            )));
        }

        let exists = self
            .client
            .indices()
            .exists(IndicesExistsParts::Index(&[&self.index]))
            .send()
            .await
            .map_err(unavailable)?;
        if exists.status_code().is_success() {
            return Ok(());
        }
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&self.index))
            .send()
            .await
            .map_err(unavailable)?;
        if response.status_code().is_success() {
            return Ok(());
        }
        let (status, error_type) = error_of(response).await;
        // Another process created it between our check and our create.
        if error_type == "resource_already_exists_exception" {
            return Ok(());
        }
        Err(setup(format!(
            "create index: status {status}, error type {error_type}"
        )))
    }

    fn unavailable(&self, error: impl Into<member_projections::sink::BoxError>) -> SinkError {
        SinkError::unavailable(self.cluster.target(), error)
    }

    /// A response that is not a success: `429` and `5xx` are worth a retry, the rest is not.
    async fn failed(&self, what: &'static str, response: Response) -> SinkError {
        let (status, error_type) = error_of(response).await;
        let error = EsError::Status {
            what,
            status: status.as_u16(),
            error_type,
        };
        if retryable(status) {
            self.unavailable(error)
        } else {
            SinkError::corrupt(self.cluster.target(), error.to_string())
        }
    }

    async fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &'static str,
        response: Response,
    ) -> Result<T, SinkError> {
        let bytes = response.bytes().await.map_err(|e| self.unavailable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            // Category and position only: the text could quote a document.
            let error = EsError::Response {
                what,
                reason: format!("{:?} error at column {}", e.classify(), e.column()),
            };
            SinkError::corrupt(self.cluster.target(), error.to_string())
        })
    }
}

/// Builds a client for one cluster URL. User info in the URL becomes basic authentication (and
/// is removed from the URL, which is logged). Proxies from the environment are ignored: the
/// clusters are on the internal network, and a proxy in the order path is a failure point.
fn client(url: &str) -> Result<Elasticsearch, String> {
    let mut url = Url::parse(url).map_err(|e| format!("{e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http or https url".into());
    }
    let credentials = (!url.username().is_empty()).then(|| {
        Credentials::Basic(
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or("")),
        )
    });
    url.set_username("")
        .map_err(|()| "cannot strip the user name")?;
    url.set_password(None)
        .map_err(|()| "cannot strip the password")?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .disable_proxy()
        .timeout(REQUEST_TIMEOUT);
    if let Some(credentials) = credentials {
        builder = builder.auth(credentials);
    }
    let transport = builder.build().map_err(|e| format!("{e}"))?;
    Ok(Elasticsearch::new(transport))
}

/// Decodes `%XX` escapes (user info in a URL is percent-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The status and `error.type` of a failed response (`unknown` when the body has none).
async fn error_of(response: Response) -> (StatusCode, String) {
    let status = response.status_code();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, error_type(&body))
}

fn error_type(body: &Value) -> String {
    match body.pointer("/error/type").and_then(Value::as_str) {
        Some(t) => t.to_owned(),
        None => "unknown".to_owned(),
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
    source: Stored,
}

#[async_trait]
impl Sink for ElasticsearchIndex {
    fn target(&self) -> &str {
        self.cluster.target()
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        let docs = latest_per_member(records);
        if docs.is_empty() {
            return Ok(());
        }
        let operations: Vec<BulkOperation<Value>> = docs
            .iter()
            .map(|doc| {
                let id = doc.member_id.to_string();
                BulkOperation::index(requests::source(doc))
                    .id(id.clone())
                    .routing(id)
                    .version(doc.version as i64)
                    .version_type(VersionType::External)
                    .into()
            })
            .collect();
        let response = self
            .client
            .bulk(BulkParts::Index(&self.index))
            .filter_path(&["errors", "items.*.status", "items.*.error.type"])
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            )
            .body(operations)
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
        let mut failed = body
            .items
            .iter()
            .flat_map(|item| item.values())
            // 409: the stored version is already as new (the external version guard).
            .filter(|item| !(200..300).contains(&item.status) && item.status != 409)
            .peekable();
        let Some(first) = failed.peek() else {
            return Ok(());
        };
        let status = first.status;
        let error_type = first
            .error
            .as_ref()
            .and_then(|e| e.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let failures: Vec<&BulkItem> = failed.collect();
        let all_retryable = failures
            .iter()
            .all(|item| StatusCode::from_u16(item.status).is_ok_and(retryable));
        let error = EsError::Items {
            failed: failures.len(),
            total,
            status,
            error_type,
        };
        tracing::warn!(
            target: "member::search",
            cluster = self.cluster.target(),
            %error,
            "bulk refused"
        );
        Err(if all_retryable {
            self.unavailable(error)
        } else {
            SinkError::corrupt(self.cluster.target(), error.to_string())
        })
    }
}

#[async_trait]
impl MemberReader for ElasticsearchIndex {
    fn target(&self) -> &str {
        self.cluster.target()
    }

    async fn by_id(&self, member_id: Uuid) -> Result<Option<MemberDocument>, SinkError> {
        let id = member_id.to_string();
        let response = self
            .client
            .get(GetParts::IndexId(&self.index, &id))
            .routing(&id)
            // Near-real-time like searches (and like the tantivy adapter): a real-time get of a
            // document not yet refreshed makes Elasticsearch refresh the shard, which the
            // order path's read rate must not trigger.
            .realtime(false)
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

    async fn by_identity(&self, key: &IdentityKey) -> Result<Option<MemberDocument>, SinkError> {
        let response = self
            .client
            .search(SearchParts::Index(&[&self.index]))
            .allow_partial_search_results(false)
            .body(requests::identity_search(key))
            .send()
            .await
            .map_err(|e| self.unavailable(e))?;
        if !response.status_code().is_success() {
            return Err(self.failed("search", response).await);
        }
        let body: SearchResponse = self.read_json("search", response).await?;
        Ok(holder_of(
            key,
            body.hits.hits.into_iter().map(|h| h.source.doc),
        ))
    }
}
