//! The Elasticsearch adapter on the local stack's real clusters (Elasticsearch 8.14, started
//! through scripts/stack.sh when they do not answer): the sink contract, the tuning read back
//! from the cluster, routed lookups, the identity lookup whatever the history, external-version
//! conflicts and partial bulk failures. Every test works in indices of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use elasticsearch::indices::{
    IndicesGetMappingParts, IndicesGetSettingsParts, IndicesPutSettingsParts,
};
use elasticsearch::params::VersionType;
use elasticsearch::{BulkOperation, BulkParts, SearchParts};
use member_domain::{Identity, MemberEvent, UnbindReason};
use member_infra::search::{ElasticsearchIndex, SearchCluster};
use member_projections::fixtures::MemberHistory;
use member_projections::projector::{
    Projector, ProjectorSettings, RecordSource, SourceBatch, SourceError,
};
use member_projections::{MemberReader, MemberRecord, Sink, SinkError};
use member_tests::elasticsearch::{ensure_cluster, fresh_index, remove};
use member_tests::sink_contract::Ids;
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_of_the_stack_answers() {
    for cluster in SearchCluster::ALL {
        ensure_cluster(cluster);
        let index = fresh_index(cluster, 1).await;
        let health = index
            .client()
            .cluster()
            .health(elasticsearch::cluster::ClusterHealthParts::None)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(health["cluster_name"], cluster.target(), "{cluster}");
        assert_ne!(health["status"], "red", "{cluster}");
        remove(&index).await;
    }
}

async fn open() -> (ElasticsearchIndex, ()) {
    (fresh_index(SearchCluster::Primary, 2).await, ())
}

async fn close(index: ElasticsearchIndex, (): ()) {
    remove(&index).await;
}

mod contract {
    member_tests::sink_contract_tests!(super::open, super::close);
}

/// The concrete index behind an alias, and its settings or mappings as the cluster reports them.
async fn read_back(index: &ElasticsearchIndex, alias: &str, mapping: bool) -> Value {
    let response = if mapping {
        index
            .client()
            .indices()
            .get_mapping(IndicesGetMappingParts::Index(&[alias]))
            .send()
            .await
    } else {
        index
            .client()
            .indices()
            .get_settings(IndicesGetSettingsParts::Index(&[alias]))
            .send()
            .await
    };
    let body: Value = response.unwrap().json().await.unwrap();
    let map = body.as_object().expect("one entry per concrete index");
    assert_eq!(map.len(), 1, "{alias} points at one index: {body}");
    let (concrete, value) = map.iter().next().unwrap();
    assert_eq!(concrete, &format!("{alias}-000001"));
    value.clone()
}

/// Every field of a mapping: a keyword, or not indexed at all. No analysed text anywhere.
fn assert_keyword_only(mapping: &Value, alias: &str) {
    let text = mapping.to_string();
    assert!(
        !text.contains("\"text\""),
        "{alias}: analysed text in {text}"
    );
    let properties = mapping["properties"].as_object().unwrap();
    for (field, def) in properties {
        let keyword = def["type"] == "keyword";
        let unindexed = def["index"] == false || def["enabled"] == false;
        assert!(keyword || unindexed, "{alias}.{field}: {def}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_mappings_read_back_as_configured() {
    let index = fresh_index(SearchCluster::Primary, 3).await;
    for alias in [index.index().to_owned(), index.identity_index().to_owned()] {
        let settings = read_back(&index, &alias, false).await;
        let s = &settings["settings"]["index"];
        assert_eq!(s["number_of_shards"], "3", "{alias}: {s}");
        assert_eq!(s["number_of_replicas"], "0", "{alias}: {s}");
        assert_eq!(s["refresh_interval"], "100ms", "{alias}: {s}");

        let mapping = read_back(&index, &alias, true).await;
        let m = &mapping["mappings"];
        assert_eq!(m["dynamic"], "strict", "{alias}: {m}");
        assert_eq!(m["_routing"]["required"], true, "{alias}: {m}");
        assert_keyword_only(m, &alias);
    }
    let members = read_back(&index, index.index(), true).await;
    let p = &members["mappings"]["properties"];
    assert_eq!(p["member_id"]["type"], "keyword");
    assert_eq!(p["status"]["type"], "keyword");
    assert_eq!(p["doc"]["enabled"], false);
    let identities = read_back(&index, index.identity_index(), true).await;
    let p = &identities["mappings"]["properties"];
    assert_eq!(p["member_id"]["type"], "keyword");
    assert_eq!(p["generation"]["index"], false);

    // Strict: a document with a field the mapping does not name is refused, not indexed.
    let refused = index
        .client()
        .index(elasticsearch::IndexParts::IndexId(index.index(), "x"))
        .routing("x")
        .body(json!({"member_id": "x", "nickname": "free text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status_code().as_u16(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "strict_dynamic_mapping_exception");
    remove(&index).await;
}

fn bound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityBound {
        identity: identity.clone(),
    }
}

fn unbound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityUnbound {
        identity: identity.clone(),
        reason: UnbindReason::MemberRequest,
    }
}

/// Polls until `check` holds (10 s at most): the clusters are near-real-time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_by_identity_touches_one_shard() {
    let index = fresh_index(SearchCluster::Primary, 6).await;
    let ids = Ids::fresh();
    let mut h = MemberHistory::new(Uuid::now_v7());
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(bound(&ids.mobile), Some(1));
    index.apply(h.records()).await.unwrap();
    let key = ids.mobile.key();
    let doc = h.records().last().unwrap().document.clone();
    eventually("the member is found by mobile", || async {
        index.by_identity(&key).await.unwrap().as_ref() == Some(&doc)
    })
    .await;

    let answer = index.identity_lookup_response(&key).await.unwrap();
    assert_eq!(answer["_shards"]["total"], 1, "{}", answer["_shards"]);
    assert_eq!(answer["_shards"]["failed"], 0);
    assert_eq!(answer["hits"]["hits"].as_array().unwrap().len(), 1);
    // The same query without routing fans out to every shard: the assertion above can fail.
    let unrouted: Value = index
        .client()
        .search(SearchParts::Index(&[index.identity_index()]))
        .body(member_infra::search::elasticsearch::reader::identity_search(&key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(unrouted["_shards"]["total"], 6, "{}", unrouted["_shards"]);
    remove(&index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_held_by_many_members_in_turn_resolves_to_its_current_holder() {
    let index = fresh_index(SearchCluster::Primary, 2).await;
    let ids = Ids::fresh();
    // Fifteen members hold the card in turn (generations 1, 2, ... 29); every earlier holder's
    // document keeps its release, so a search by identity would match fifteen documents.
    let mut histories = Vec::new();
    for i in 0..15u64 {
        let mut h = MemberHistory::new(Uuid::now_v7());
        h.push(MemberEvent::MemberRegistered {}, None);
        h.push(bound(&ids.card), Some(2 * i + 1));
        if i < 14 {
            h.push(unbound(&ids.card), Some(2 * i + 2));
        }
        histories.push(h);
    }
    let holder = histories
        .last()
        .unwrap()
        .records()
        .last()
        .unwrap()
        .document
        .clone();
    // The current holder first, the older holders after (other partitions, behind).
    for h in histories.iter().rev() {
        index.apply(h.records()).await.unwrap();
    }
    let key = ids.card.key();
    eventually("the fifteenth member holds the card", || async {
        index.by_identity(&key).await.unwrap().as_ref() == Some(&holder)
    })
    .await;
    // And once the last holder releases it, nobody does.
    let mut last = histories.pop().unwrap();
    last.push(unbound(&ids.card), Some(30));
    index.apply(last.records()).await.unwrap();
    eventually("nobody holds the released card", || async {
        index.by_identity(&key).await.unwrap().is_none()
    })
    .await;
    remove(&index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_is_a_409_and_counts_as_success() {
    let index = fresh_index(SearchCluster::Primary, 2).await;
    let ids = Ids::fresh();
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(bound(&ids.mobile), Some(1));
    h.push(bound(&ids.card), Some(1));
    index.apply(h.records()).await.unwrap();
    let newest = h.records().last().unwrap().document.clone();

    // What Elasticsearch answers to an older external version: 409 on that item.
    let old = &h.records()[0].document;
    let body: Value = index
        .client()
        .bulk(BulkParts::Index(index.index()))
        .body(vec![BulkOperation::<Value>::from(
            BulkOperation::index(json!({"member_id": id, "status": "active", "doc": old}))
                .id(id.to_string())
                .routing(id.to_string())
                .version(old.version as i64)
                .version_type(VersionType::External),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"][0]["index"]["status"], 409, "{body}");
    assert_eq!(
        body["items"][0]["index"]["error"]["type"],
        "version_conflict_engine_exception"
    );

    // The adapter takes it as the guard doing its job: success, and the newer document stays.
    index
        .apply(&h.records()[..1])
        .await
        .expect("a 409 is success");
    index.apply(h.records()).await.expect("a replay is success");
    eventually("the newest version stays", || async {
        index.by_id(id).await.unwrap().as_ref() == Some(&newest)
    })
    .await;
    // A lookup by identity searches the identity index: visible once it is refreshed.
    eventually("the card finds the newest version", || async {
        index.by_identity(&ids.card.key()).await.unwrap().as_ref() == Some(&newest)
    })
    .await;
    remove(&index).await;
}

/// A sink that counts the batches its store refused.
struct FailureCounting {
    inner: Arc<ElasticsearchIndex>,
    failures: Arc<Mutex<u32>>,
}

#[async_trait]
impl Sink for FailureCounting {
    fn target(&self) -> &str {
        Sink::target(self.inner.as_ref())
    }

    async fn apply(&self, records: &[MemberRecord]) -> Result<(), SinkError> {
        let applied = self.inner.apply(records).await;
        if applied.is_err() {
            *self.failures.lock().unwrap() += 1;
        }
        applied
    }
}

/// One partition in memory; `committed` is shared so the test can watch it.
struct VecSource {
    records: Vec<MemberRecord>,
    cursor: usize,
    committed: Arc<Mutex<i64>>,
}

#[async_trait]
impl RecordSource for VecSource {
    async fn next_batch(
        &mut self,
        max: usize,
        max_wait: Duration,
    ) -> Result<SourceBatch, SourceError> {
        if self.cursor >= self.records.len() {
            tokio::time::sleep(max_wait).await;
            return Ok(SourceBatch::default());
        }
        let end = (self.cursor + max).min(self.records.len());
        let records = self.records[self.cursor..end].to_vec();
        self.cursor = end;
        Ok(SourceBatch {
            records,
            commit: BTreeMap::from([(0, end as i64)]),
        })
    }

    async fn commit(&mut self, batch: &SourceBatch) -> Result<(), SourceError> {
        *self.committed.lock().unwrap() = batch.commit[&0];
        Ok(())
    }
}

async fn set_write_block(index: &ElasticsearchIndex, alias: &str, blocked: bool) {
    let response = index
        .client()
        .indices()
        .put_settings(IndicesPutSettingsParts::Index(&[alias]))
        .body(json!({"index.blocks.write": blocked}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status_code().is_success(),
        "{}",
        response.status_code()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_item_fails_the_batch_keeps_the_others_and_holds_the_offset() {
    let index = Arc::new(fresh_index(SearchCluster::Primary, 2).await);
    let ids = Ids::fresh();
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(bound(&ids.mobile), Some(1));
    h.push(bound(&ids.card), Some(1));
    let records = h.records().to_vec();
    let doc = records.last().unwrap().document.clone();

    // The member index refuses writes; the identity index does not. One batch: the member's
    // document (refused) and its two identity entries (applied).
    set_write_block(&index, index.index(), true).await;
    let error = index
        .apply(&records)
        .await
        .expect_err("a refused item fails the batch");
    let text = error.to_string();
    assert!(matches!(error, SinkError::Corrupt { .. }), "{text}");
    assert!(text.contains("1 of 3 items failed"), "{text}");
    assert!(text.contains("cluster_block_exception"), "{text}");
    assert!(
        !text.contains(ids.mobile.value()),
        "no personal data in errors: {text}"
    );
    // The others were not lost.
    eventually("the identity entries were applied", || async {
        let entry = index.identity_entry(&ids.card.key()).await.unwrap();
        entry.is_some_and(|e| e.member_id == Some(id))
    })
    .await;
    assert_eq!(index.by_id(id).await.unwrap(), None);

    // The projector retries the same batch and commits nothing past it until it applies.
    let committed = Arc::new(Mutex::new(0));
    let source = VecSource {
        records: records.clone(),
        cursor: 0,
        committed: committed.clone(),
    };
    let settings = ProjectorSettings {
        batch_size: 10,
        max_wait: Duration::from_millis(5),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let failures = Arc::new(Mutex::new(0u32));
    let sink: Arc<dyn Sink> = Arc::new(FailureCounting {
        inner: index.clone(),
        failures: failures.clone(),
    });
    let task = tokio::spawn(Projector::new(source, sink, settings).run(async {
        let _ = stopped.await;
    }));
    // The first attempt fails (the block is still on) and the next is 5 s away (Corrupt).
    eventually("the first attempt is refused", || async {
        *failures.lock().unwrap() >= 1
    })
    .await;
    assert_eq!(
        *committed.lock().unwrap(),
        0,
        "offset moved past a refused item"
    );
    set_write_block(&index, index.index(), false).await;
    eventually("the retried batch is applied and committed", || async {
        *committed.lock().unwrap() == records.len() as i64
    })
    .await;
    eventually("the member is found by id and by identity", || async {
        index.by_id(id).await.unwrap().as_ref() == Some(&doc)
            && index.by_identity(&ids.mobile.key()).await.unwrap().as_ref() == Some(&doc)
    })
    .await;
    let _ = stop.send(());
    task.await.unwrap();
    remove(&index).await;
}
