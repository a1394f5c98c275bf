//! The Elasticsearch adapter, through the official `elasticsearch` crate (8.x, matching the
//! server's major version): one client per cluster URL, two indices per cluster, each behind an
//! alias named by `search.elasticsearch.index_prefix`:
//! - `<prefix>`: the member documents, keyed and routed by member id;
//! - `<prefix>_identity`: one entry per identity, keyed and routed by the identity key, naming
//!   the member that holds it at the entry's generation (or nobody: a release).
//!
//! The aliases point at `<alias>-<generation>` indices ([`schema`]), so that `member rebuild`
//! can build the next generation beside the live one and swap the alias atomically.
//!
//! What it relies on from Elasticsearch, and why:
//! - **External versioning** (`version_type: external`): a member document's version is its
//!   aggregate version, an identity entry's version is its ownership generation. The version
//!   guard of the port (`projections::sink`) is Elasticsearch's own compare-and-set, per
//!   document, on the primary shard: no read-modify-write here. A `409` item (the stored version
//!   is equal or higher) is the guard doing its job and counts as success; any other item error
//!   fails the whole batch, which the projector retries without moving its offset (the items
//!   that were applied then answer `409`).
//! - **Routing**: member documents by member id, identity entries by identity key, on every
//!   write and read (the mappings require it): a lookup by id or by identity touches one shard.
//! - **Keyword-only mappings** with `dynamic: strict`: ids and identities are exact terms,
//!   nothing is analysed, and a document with an unexpected field is refused rather than
//!   indexed. The member document itself is kept in `_source` under `doc`, not indexed at all.
//! - **Filter context** for the identity lookup (no scoring, cacheable), no sorting, and
//!   `allow_partial_search_results=false`, so that a failed shard is an error (the query path
//!   falls back) instead of a silent miss.
//! - **Near-real-time refresh** (`refresh_interval` = `search.refresh_ms`): writes are visible
//!   to searches after the next refresh, and so are gets (`realtime=false`: a real-time get of
//!   an unrefreshed document would make the shard refresh, at the order path's read rate).
//! - **Durability**: a bulk response comes after the translog was fsynced on the primary and its
//!   replicas (`index.translog.durability: request`, the default), so `apply` returning means
//!   the batch survives a node restart.
//!
//! Errors: transport failures (connection refused, timeout), `429` and `5xx` are
//! [`SinkError::Unavailable`] (retry); anything else Elasticsearch refuses (a mapping conflict,
//! a write block) is [`SinkError::Corrupt`] (needs an operator). Messages carry the status and
//! Elasticsearch's error type only, never its reason text, which can quote document values.

mod client;
mod maintenance;
pub mod reader;
pub mod schema;
mod sink;

use std::time::Duration;

use ::elasticsearch::http::response::Response;
use ::elasticsearch::http::StatusCode;
use ::elasticsearch::Elasticsearch;
use member_projections::SinkError;
use serde::Deserialize;
use serde_json::Value;

use super::{SearchCluster, SearchError};

/// How long one request may take before it counts as `Unavailable`. A bulk of a thousand
/// documents takes well under a second on a healthy cluster.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the indices are set up.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// The member alias; the identity alias is `<index>_identity`. Also the templates' names.
    pub index: String,
    /// `number_of_shards` of a newly created index (each shard at most 50 GB: size the count
    /// for the data, docs/decisions/0021-elasticsearch-identity-index-and-aliases.md).
    pub shards: u32,
    /// `number_of_replicas` of a newly created index (0 on a one-node cluster).
    pub replicas: u32,
    /// `refresh_interval` of a newly created index.
    pub refresh: Duration,
}

/// A cluster's Elasticsearch indices; a [`member_projections::Sink`] and a
/// [`member_projections::MemberReader`].
pub struct ElasticsearchIndex {
    cluster: SearchCluster,
    client: Elasticsearch,
    /// The member alias.
    index: String,
    /// The identity alias.
    identity_index: String,
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
    /// sets up both aliases ([`schema`]): templates created or updated, first generation created
    /// unless an index or alias of that name exists.
    pub async fn connect(
        url: &str,
        cluster: SearchCluster,
        options: IndexOptions,
    ) -> Result<Self, SearchError> {
        let target = cluster.target();
        if !schema::is_index_name(&options.index) {
            return Err(SearchError::InvalidIndexName {
                target,
                index: options.index.clone(),
            });
        }
        let client =
            client::client(url).map_err(|reason| SearchError::InvalidUrl { target, reason })?;
        let this = Self {
            cluster,
            client,
            index: options.index.clone(),
            identity_index: schema::identity_alias(&options.index),
        };
        schema::set_up(&this, &options).await?;
        tracing::info!(
            target: "member::search",
            cluster = target,
            index = %this.index,
            "elasticsearch indices ready"
        );
        Ok(this)
    }

    pub fn cluster(&self) -> SearchCluster {
        self.cluster
    }

    /// The member alias.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// The identity alias.
    pub fn identity_index(&self) -> &str {
        &self.identity_index
    }

    /// The client, for calls outside the port (operations, test clean-up).
    pub fn client(&self) -> &Elasticsearch {
        &self.client
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
