//! The local stack's Elasticsearch clusters for tests: started through scripts/stack.sh when they
//! do not answer, a fresh pair of indices per test, removed at the end.

use std::time::Duration;

use elasticsearch::indices::{IndicesDeleteIndexTemplateParts, IndicesDeleteParts};
use member_infra::search::elasticsearch::IndexOptions;
use member_infra::search::{ElasticsearchIndex, SearchCluster};

/// Makes sure the cluster answers (at least yellow), starting it through the stack script if
/// it does not: the tests run against real Elasticsearch, never skip.
pub fn ensure_cluster(cluster: SearchCluster) {
    if !crate::process::stack_ok(&["check", cluster.target()]) {
        crate::process::stack(&["start-service", cluster.target()]);
    }
}

/// The URL of `cluster` in the local configuration.
pub fn url(cluster: SearchCluster) -> String {
    cluster.elasticsearch_url(&crate::settings()).to_owned()
}

/// Index options unique to one test.
pub fn fresh_options(shards: u32) -> IndexOptions {
    IndexOptions {
        index: crate::unique("member_t"),
        shards,
        replicas: 0,
        refresh: Duration::from_millis(100),
    }
}

/// A fresh pair of indices on `cluster` (started if needed).
pub async fn fresh_index(cluster: SearchCluster, shards: u32) -> ElasticsearchIndex {
    ensure_cluster(cluster);
    ElasticsearchIndex::connect(&url(cluster), cluster, fresh_options(shards))
        .await
        .expect("the local cluster accepts the templates and indices")
}

/// Removes every index behind both aliases and both templates.
pub async fn remove(index: &ElasticsearchIndex) {
    let client = index.client();
    let patterns = [
        format!("{}-*", index.index()),
        format!("{}-*", index.identity_index()),
    ];
    let patterns: Vec<&str> = patterns.iter().map(String::as_str).collect();
    let deleted = client
        .indices()
        .delete(IndicesDeleteParts::Index(&patterns))
        .send()
        .await
        .expect("delete the test indices");
    assert!(
        deleted.status_code().is_success(),
        "{}",
        deleted.status_code()
    );
    for name in [index.index(), index.identity_index()] {
        let deleted = client
            .indices()
            .delete_index_template(IndicesDeleteIndexTemplateParts::Name(name))
            .send()
            .await
            .expect("delete the test template");
        assert!(
            deleted.status_code().is_success(),
            "{}",
            deleted.status_code()
        );
    }
}
