//! The search projections: three clusters (primary for the order path, backup for fail-over,
//! marketing for isolated campaign traffic), each a [`Sink`] and a [`MemberReader`] over one
//! search index.
//!
//! Two adapters implement the port, chosen by `search.engine`:
//! - [`elasticsearch`] (the default, as in production): one client per cluster URL, a member
//!   index routed by member id and an identity index keyed and routed by identity key, bulk
//!   writes with external versioning, keyword-only fields, lookups in filter context;
//! - [`tantivy`] (embedded, for machines without Java): an index per cluster under
//!   `<data_dir>/search/<cluster>`, near-real-time like Elasticsearch (a write becomes visible to
//!   readers on the next refresh, every `search.refresh_ms`). It keeps whole documents only, no
//!   identity index: a lookup by identity finds every document that lists the identity (held or
//!   released) and keeps the one with the highest generation ([`MemberDocument::generation_of`]).
//!
//! Known gap of the tantivy adapter against the port's rule (`projections::sink`): without an
//! identity index, the store does not remember an unbind once the document that made it is
//! replaced. If an identity moved A -> B and was then unbound by B, and the store has applied
//! all of B's records but not yet A's unbind, a lookup returns A's stale document where the rule
//! asks for "absent", until A's unbind is applied. The Elasticsearch adapter's identity index
//! keeps the release (an entry without holder at its generation) and has no such gap.

pub mod elasticsearch;
pub mod tantivy;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, Sink};

use crate::config::{SearchEngine, Settings};

pub use self::elasticsearch::ElasticsearchIndex;
pub use self::tantivy::TantivyIndex;

/// One of the three search clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchCluster {
    /// Order-path reads.
    Primary,
    /// Fail-over for the order path.
    Backup,
    /// Campaign traffic, isolated from the order path.
    Marketing,
}

impl SearchCluster {
    pub const ALL: [SearchCluster; 3] = [
        SearchCluster::Primary,
        SearchCluster::Backup,
        SearchCluster::Marketing,
    ];

    /// The cluster's short name: `primary`, `backup`, `marketing` (its directory under
    /// `<data_dir>/search`).
    pub fn name(self) -> &'static str {
        match self {
            SearchCluster::Primary => "primary",
            SearchCluster::Backup => "backup",
            SearchCluster::Marketing => "marketing",
        }
    }

    /// The projection target: `search-primary`, `search-backup`, `search-marketing`.
    pub fn target(self) -> &'static str {
        match self {
            SearchCluster::Primary => "search-primary",
            SearchCluster::Backup => "search-backup",
            SearchCluster::Marketing => "search-marketing",
        }
    }

    /// The Elasticsearch URL configured for this cluster, password included: for connecting.
    pub fn elasticsearch_url(self, settings: &Settings) -> &str {
        let es = &settings.search.elasticsearch;
        match self {
            SearchCluster::Primary => es.primary_url.expose_secret(),
            SearchCluster::Backup => es.backup_url.expose_secret(),
            SearchCluster::Marketing => es.marketing_url.expose_secret(),
        }
    }
}

impl fmt::Display for SearchCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target())
    }
}

/// Not a search target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown search target {0:?} (expected search-primary, search-backup or search-marketing)")]
pub struct UnknownCluster(pub String);

impl FromStr for SearchCluster {
    type Err = UnknownCluster;

    /// Accepts the target (`search-primary`) or the short name (`primary`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SearchCluster::ALL
            .into_iter()
            .find(|c| s == c.target() || s == c.name())
            .ok_or_else(|| UnknownCluster(s.to_owned()))
    }
}

/// A search index could not be opened. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{target}: cannot open the tantivy index in {path}")]
    Tantivy {
        target: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: ::tantivy::TantivyError,
    },
    #[error("{target}: cannot create the directory {path}")]
    Io {
        target: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: invalid Elasticsearch url: {reason}")]
    InvalidUrl {
        target: &'static str,
        reason: String,
    },
    #[error("{target}: invalid Elasticsearch index name {index:?} (lowercase [a-z0-9_-], not starting with _ or -)")]
    InvalidIndexName { target: &'static str, index: String },
    #[error("{target}: Elasticsearch refused to set up index {index}: {reason}")]
    Setup {
        target: &'static str,
        index: String,
        reason: String,
    },
    #[error("{target}: Elasticsearch unavailable")]
    Unavailable {
        target: &'static str,
        #[source]
        source: ::elasticsearch::Error,
    },
}

/// An opened search index of either engine.
#[derive(Clone)]
pub enum SearchIndex {
    Tantivy(Arc<TantivyIndex>),
    Elasticsearch(Arc<ElasticsearchIndex>),
}

impl SearchIndex {
    /// Opens the index of `cluster` with the engine named by `search.engine`: for tantivy, the
    /// directory `<data_dir>/search/<cluster>` (created if missing); for Elasticsearch, the
    /// cluster's URL, setting up the index template and index if they do not exist.
    ///
    /// Must be called within a tokio runtime (tantivy's refresher is a background task).
    pub async fn open(settings: &Settings, cluster: SearchCluster) -> Result<Self, SearchError> {
        let refresh = Duration::from_millis(settings.search.refresh_ms.max(1));
        match settings.search.engine {
            SearchEngine::Tantivy => {
                let dir = tantivy::cluster_dir(&settings.data_dir, cluster);
                let index = TantivyIndex::open(&dir, cluster, refresh).await?;
                Ok(SearchIndex::Tantivy(Arc::new(index)))
            }
            SearchEngine::Elasticsearch => {
                let es = &settings.search.elasticsearch;
                let options = elasticsearch::IndexOptions {
                    index: es.index_prefix.clone(),
                    shards: es.shards.get(),
                    replicas: es.replicas,
                    refresh,
                };
                let index = ElasticsearchIndex::connect(
                    cluster.elasticsearch_url(settings),
                    cluster,
                    options,
                )
                .await?;
                Ok(SearchIndex::Elasticsearch(Arc::new(index)))
            }
        }
    }

    pub fn sink(&self) -> Arc<dyn Sink> {
        match self {
            SearchIndex::Tantivy(i) => i.clone(),
            SearchIndex::Elasticsearch(i) => i.clone(),
        }
    }

    pub fn reader(&self) -> Arc<dyn MemberReader> {
        match self {
            SearchIndex::Tantivy(i) => i.clone(),
            SearchIndex::Elasticsearch(i) => i.clone(),
        }
    }
}

/// The identity keys a search document is found by: those it holds and those it released. A
/// search store keeps no identity index of its own, so a release has to be findable to outrank an
/// older holder whose own unbind has not been applied yet.
pub(crate) fn searched_keys(doc: &MemberDocument) -> Vec<String> {
    doc.identities
        .iter()
        .chain(&doc.released)
        .map(|i| i.key.to_string())
        .collect()
}

/// Of the documents found for `key`, the one whose claim on it has the highest generation, if that
/// claim is a hold; if the highest is a release, nobody holds the key as far as this store knows.
/// (Ties, which the event store never produces, go to the higher version, then the higher member
/// id, so the answer is deterministic.) Documents that neither hold nor released the key are
/// ignored.
pub(crate) fn holder_of(
    key: &IdentityKey,
    candidates: impl IntoIterator<Item = MemberDocument>,
) -> Option<MemberDocument> {
    candidates
        .into_iter()
        .filter_map(|doc| match doc.generation_of(key) {
            Some(g) => Some((g, true, doc)),
            None => doc.released_at(key).map(|g| (g, false, doc)),
        })
        .max_by(|(ga, _, a), (gb, _, b)| {
            ga.cmp(gb)
                .then(a.version.cmp(&b.version))
                .then(a.member_id.cmp(&b.member_id))
        })
        .and_then(|(_, held, doc)| held.then_some(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_parse_from_target_and_name() {
        for c in SearchCluster::ALL {
            assert_eq!(c.target().parse::<SearchCluster>().unwrap(), c);
            assert_eq!(c.name().parse::<SearchCluster>().unwrap(), c);
        }
        assert!("search-other".parse::<SearchCluster>().is_err());
        assert!("mysql".parse::<SearchCluster>().is_err());
    }
}
