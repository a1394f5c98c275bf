//! The sink contract against a real Elasticsearch cluster, when `ELASTICSEARCH_URL` names one
//! (for example `http://127.0.0.1:9200` or `https://user:password@host:9200`). Without it the
//! test says so and passes: no Elasticsearch can run on the development machines, so the
//! adapter's requests are pinned by `search_elasticsearch.rs` against a recording server, and
//! this is the test to run wherever a cluster is at hand.

use std::time::Duration;

use elasticsearch::indices::{IndicesDeleteIndexTemplateParts, IndicesDeleteParts};
use member_infra::search::elasticsearch::IndexOptions;
use member_infra::search::{ElasticsearchIndex, SearchCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_passes_the_sink_contract() {
    let Ok(url) = std::env::var("ELASTICSEARCH_URL") else {
        eprintln!(
            "search_elasticsearch_live: ELASTICSEARCH_URL is not set; the sink contract was NOT \
             run against a real Elasticsearch cluster"
        );
        return;
    };
    // A fresh index (and template) per run, removed at the end.
    let name = format!("member_contract_{}", uuid::Uuid::new_v4().simple());
    let options = IndexOptions {
        index: name.clone(),
        shards: 2,
        refresh: Duration::from_millis(100),
    };
    let index = ElasticsearchIndex::connect(&url, SearchCluster::Primary, options)
        .await
        .expect("the cluster at ELASTICSEARCH_URL answers and accepts the index template");

    member_tests::sink_contract::run_all(&index, &index).await;

    let client = index.client();
    let deleted = client
        .indices()
        .delete(IndicesDeleteParts::Index(&[&name]))
        .send()
        .await
        .expect("delete the test index");
    assert!(
        deleted.status_code().is_success(),
        "{}",
        deleted.status_code()
    );
    let deleted = client
        .indices()
        .delete_index_template(IndicesDeleteIndexTemplateParts::Name(&name))
        .send()
        .await
        .expect("delete the test template");
    assert!(
        deleted.status_code().is_success(),
        "{}",
        deleted.status_code()
    );
}
