//! The Elasticsearch adapter, against a local HTTP server that records every request and answers
//! the way Elasticsearch does: these tests pin the exact requests the adapter sends (the
//! templates, the bulk lines, the routed identity search, the routed get) and how it reads
//! answers that a healthy cluster rarely gives (refusals, dead connections);
//! `search_elasticsearch_live.rs` runs the adapter against the local stack's real clusters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use member_domain::{Identity, MemberEvent, UnbindReason};
use member_infra::config::Settings;
use member_infra::search::elasticsearch::IndexOptions;
use member_infra::search::{ElasticsearchIndex, SearchCluster, SearchError, SearchIndex};
use member_projections::fixtures::MemberHistory;
use member_projections::{MemberDocument, MemberReader, Sink, SinkError};
use serde_json::{json, Value};
use uuid::Uuid;

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Captured {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

impl Captured {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a json body")
    }

    fn query(&self) -> Vec<(&str, &str)> {
        let mut q: Vec<(&str, &str)> = self
            .query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        q.sort();
        q
    }
}

/// A test's answer to a request, or `None` for the default (index setup succeeds, anything
/// else is refused as unexpected).
type Reply = Box<dyn Fn(&Captured) -> Option<(u16, Value)> + Send + Sync>;

struct Shared {
    captured: Mutex<Vec<Captured>>,
    reply: Reply,
}

/// The fake cluster: an axum server on its own runtime, so that stopping it closes every
/// connection at once (as a crashed node would).
struct FakeElasticsearch {
    url: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeElasticsearch {
    fn start(reply: impl Fn(&Captured) -> Option<(u16, Value)> + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            captured: Mutex::new(Vec::new()),
            reply: Box::new(reply),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Every request so far, in order.
    fn requests(&self) -> Vec<Captured> {
        self.shared.captured.lock().unwrap().clone()
    }

    /// The requests after index setup.
    fn requests_after_setup(&self) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|r| !is_setup(r))
            .collect()
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for FakeElasticsearch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_setup(r: &Captured) -> bool {
    r.path.starts_with("/_index_template/")
        || (r.method == Method::HEAD && (r.path == "/member" || r.path == "/member_identity"))
        || (r.method == Method::PUT
            && (r.path == "/member-000001" || r.path == "/member_identity-000001"))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let captured = Captured {
        method,
        path: uri.path().to_owned(),
        query,
        content_type: header("content-type"),
        authorization: header("authorization"),
        body: String::from_utf8(body.to_vec()).unwrap(),
    };
    shared.captured.lock().unwrap().push(captured.clone());
    let (status, body) = (shared.reply)(&captured)
        .or_else(|| default_reply(&captured))
        .unwrap_or_else(|| {
            (
                400,
                json!({"error": {"type": "unexpected_request", "reason": format!("{captured:?}")}, "status": 400}),
            )
        });
    (
        StatusCode::from_u16(status).unwrap(),
        [
            ("content-type", "application/json"),
            ("x-elastic-product", "Elasticsearch"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Index setup as on a fresh cluster: the templates are stored, the aliases do not exist yet and
/// their first generations are created.
fn default_reply(r: &Captured) -> Option<(u16, Value)> {
    match (&r.method, r.path.as_str()) {
        (&Method::PUT, p) if p.starts_with("/_index_template/") => {
            Some((200, json!({"acknowledged": true})))
        }
        (&Method::HEAD, "/member" | "/member_identity") => Some((404, Value::Null)),
        (&Method::PUT, p @ ("/member-000001" | "/member_identity-000001")) => Some((
            200,
            json!({"acknowledged": true, "shards_acknowledged": true, "index": &p[1..]}),
        )),
        _ => None,
    }
}

fn options() -> IndexOptions {
    IndexOptions {
        index: "member".into(),
        shards: 3,
        replicas: 1,
        refresh: Duration::from_millis(250),
    }
}

async fn connect(fake: &FakeElasticsearch) -> ElasticsearchIndex {
    ElasticsearchIndex::connect(&fake.url, SearchCluster::Primary, options())
        .await
        .unwrap()
}

fn identity(kind: &str, value: &str) -> Identity {
    Identity::parse(kind, value, None, None).unwrap()
}

fn bound(identity: &Identity) -> MemberEvent {
    MemberEvent::IdentityBound {
        identity: identity.clone(),
    }
}

fn registered_with(identities: &[(&Identity, u64)]) -> MemberHistory {
    let mut h = MemberHistory::new(Uuid::now_v7());
    h.push(MemberEvent::MemberRegistered {}, None);
    for (identity, generation) in identities {
        h.push(bound(identity), Some(*generation));
    }
    h
}

fn last(h: &MemberHistory) -> &MemberDocument {
    &h.records().last().unwrap().document
}

/// A bulk response item.
fn item(id: &str, status: u16, error_type: Option<&str>) -> Value {
    let mut inner = json!({"_index": "member", "_id": id, "status": status});
    if let Some(t) = error_type {
        inner["error"] = json!({"type": t, "reason": "the reason may quote values"});
    }
    json!({"index": inner})
}

fn bulk_response(items: Vec<Value>) -> Value {
    let errors = items.iter().any(|i| i["index"].get("error").is_some());
    json!({"errors": errors, "items": items})
}

#[tokio::test]
async fn setup_puts_strict_keyword_templates_then_creates_the_aliased_indices() {
    let fake = FakeElasticsearch::start(|_| None);
    connect(&fake).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 6, "{requests:#?}");
    let settings = json!({"number_of_shards": 3, "number_of_replicas": 1, "refresh_interval": "250ms", "gc_deletes": "0s"});

    let template = &requests[0];
    assert_eq!(template.method, Method::PUT);
    assert_eq!(template.path, "/_index_template/member");
    assert_eq!(
        template.json(),
        json!({
            "index_patterns": ["member-*"],
            "priority": 200,
            "template": {
                "settings": settings,
                "mappings": {
                    "dynamic": "strict",
                    "_routing": {"required": true},
                    "properties": {
                        "member_id": {"type": "keyword"},
                        "status": {"type": "keyword"},
                        "doc": {"type": "object", "enabled": false}
                    }
                }
            }
        })
    );
    assert_eq!(
        (&requests[1].method, requests[1].path.as_str()),
        (&Method::HEAD, "/member")
    );
    assert_eq!(
        (&requests[2].method, requests[2].path.as_str()),
        (&Method::PUT, "/member-000001")
    );
    // The index takes its settings and mappings from the template; the alias points at it.
    assert_eq!(requests[2].json(), json!({"aliases": {"member": {}}}));

    let template = &requests[3];
    assert_eq!(template.path, "/_index_template/member_identity");
    assert_eq!(
        template.json(),
        json!({
            "index_patterns": ["member_identity-*"],
            "priority": 200,
            "template": {
                "settings": settings,
                "mappings": {
                    "dynamic": "strict",
                    "_routing": {"required": true},
                    "properties": {
                        "member_id": {"type": "keyword"},
                        "generation": {"type": "long", "index": false, "doc_values": false}
                    }
                }
            }
        })
    );
    assert_eq!(
        (&requests[4].method, requests[4].path.as_str()),
        (&Method::HEAD, "/member_identity")
    );
    assert_eq!(requests[5].path, "/member_identity-000001");
    assert_eq!(
        requests[5].json(),
        json!({"aliases": {"member_identity": {}}})
    );
}

#[tokio::test]
async fn setup_keeps_an_existing_index_or_alias() {
    let fake =
        FakeElasticsearch::start(|r| (r.method == Method::HEAD).then_some((200, Value::Null)));
    connect(&fake).await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 4, "no create: {requests:#?}");
    assert_eq!(requests[1].method, Method::HEAD);
    assert_eq!(requests[3].method, Method::HEAD);
}

#[tokio::test]
async fn setup_accepts_an_index_created_concurrently_and_reports_other_refusals() {
    let fake = FakeElasticsearch::start(|r| {
        (r.method == Method::PUT && r.path == "/member-000001").then(|| {
            (
                400,
                json!({"error": {"type": "resource_already_exists_exception"}, "status": 400}),
            )
        })
    });
    connect(&fake).await;

    let fake = FakeElasticsearch::start(|r| {
        r.path.starts_with("/_index_template/").then(|| {
            (
                403,
                json!({"error": {"type": "security_exception"}, "status": 403}),
            )
        })
    });
    let err = ElasticsearchIndex::connect(&fake.url, SearchCluster::Primary, options())
        .await
        .err()
        .expect("a refused template fails the setup");
    assert!(matches!(err, SearchError::Setup { .. }), "{err:?}");
    assert!(err.to_string().contains("security_exception"), "{err}");
}

#[tokio::test]
async fn bulk_lines_carry_id_routing_and_the_external_version() {
    let fake = FakeElasticsearch::start(|r| {
        (r.path == "/_bulk").then(|| {
            // The first item is already newer in the index (409): the guard, not an error.
            let ids: Vec<String> = r
                .body
                .lines()
                .step_by(2)
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["index"]["_id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            let mut items = vec![item(
                &ids[0],
                409,
                Some("version_conflict_engine_exception"),
            )];
            items.extend(ids[1..].iter().map(|id| item(id, 201, None)));
            (200, bulk_response(items))
        })
    });
    let index = connect(&fake).await;

    let mobile = identity("mobile", "13800138000");
    let card = identity("elong_card", "600012345678");
    let a = registered_with(&[(&mobile, 1), (&card, 4)]);
    let b = registered_with(&[]);
    // Interleaved and out of order: only each member's highest version is sent.
    let mut batch = vec![a.records()[2].clone(), b.records()[0].clone()];
    batch.extend(a.records()[..2].iter().cloned());
    index.apply(&batch).await.expect("409 counts as applied");

    let requests = fake.requests_after_setup();
    assert_eq!(requests.len(), 1, "one bulk per batch: {requests:#?}");
    let bulk = &requests[0];
    assert_eq!(bulk.method, Method::POST);
    assert_eq!(bulk.path, "/_bulk");
    assert_eq!(
        bulk.query(),
        vec![("filter_path", "errors,items.*.status,items.*.error.type")]
    );
    assert_eq!(bulk.content_type.as_deref(), Some("application/x-ndjson"));
    assert!(bulk.body.ends_with('\n'), "ndjson ends with a newline");
    let lines: Vec<Value> = bulk
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Member documents first (by member id), routed by member id, versioned by version...
    let mut expected = Vec::new();
    let mut docs = vec![last(&a), last(&b)];
    docs.sort_by_key(|d| d.member_id);
    for doc in docs {
        let id = doc.member_id.to_string();
        expected.push(json!({"index": {
            "_index": "member", "_id": id, "routing": id,
            "version": doc.version, "version_type": "external"
        }}));
        expected.push(json!({
            "member_id": id,
            "status": "active",
            "doc": serde_json::to_value(doc).unwrap(),
        }));
    }
    // ...then the identity entries the batch changed (in key order: kind, then value), routed
    // by the canonical key, versioned by generation.
    let a_id = a.records()[0].document.member_id.to_string();
    for (key, generation) in [("mobile:+8613800138000", 1), ("elong_card:600012345678", 4)] {
        expected.push(json!({"index": {
            "_index": "member_identity", "_id": key, "routing": key,
            "version": generation, "version_type": "external"
        }}));
        expected.push(json!({"member_id": a_id, "generation": generation}));
    }
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn an_item_error_other_than_409_fails_the_batch() {
    // A mapping refusal needs an operator; a rejected execution (queue full) is retried.
    for (status, error_type, retryable) in [
        (400, "document_parsing_exception", false),
        (429, "es_rejected_execution_exception", true),
        (503, "unavailable_shards_exception", true),
    ] {
        let fake = FakeElasticsearch::start(move |r| {
            (r.path == "/_bulk").then(|| {
                (
                    200,
                    bulk_response(vec![
                        item("a", 201, None),
                        item("b", 409, Some("version_conflict_engine_exception")),
                        item("c", status, Some(error_type)),
                    ]),
                )
            })
        });
        let index = connect(&fake).await;
        let mut records = Vec::new();
        for _ in 0..3 {
            records.extend(registered_with(&[]).records().iter().cloned());
        }
        let err = index.apply(&records).await.expect_err("the batch fails");
        let message = format!(
            "{err}: {:?}",
            std::error::Error::source(&err).map(|s| s.to_string())
        );
        match (&err, retryable) {
            (SinkError::Unavailable { target, .. }, true) => assert_eq!(target, "search-primary"),
            (SinkError::Corrupt { target, reason }, false) => {
                assert_eq!(target, "search-primary");
                assert!(reason.contains(error_type), "{reason}");
                assert!(reason.contains("1 of 3"), "{reason}");
            }
            _ => panic!("{status} {error_type}: unexpected {err:?}"),
        }
        assert!(
            !message.contains("may quote values"),
            "no reason text from Elasticsearch: {message}"
        );
    }
}

#[tokio::test]
async fn a_failed_bulk_request_fails_the_batch() {
    let fake = FakeElasticsearch::start(|r| {
        (r.path == "/_bulk").then(|| {
            (
                503,
                json!({"error": {"type": "cluster_block_exception"}, "status": 503}),
            )
        })
    });
    let index = connect(&fake).await;
    let err = index
        .apply(registered_with(&[]).records())
        .await
        .expect_err("503 fails the batch");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn get_by_id_routes_by_member_id() {
    let card = identity("elong_card", "600012345678");
    let h = registered_with(&[(&card, 1)]);
    let doc = last(&h).clone();
    let known = doc.member_id.to_string();
    let stored = serde_json::to_value(&doc).unwrap();
    let missing_index = Uuid::now_v7().to_string();
    let (known_r, missing_r) = (known.clone(), missing_index.clone());
    let fake = FakeElasticsearch::start(move |r| {
        if r.method != Method::GET {
            return None;
        }
        let id = r.path.strip_prefix("/member/_doc/")?;
        Some(if id == known_r {
            (
                200,
                json!({"_index": "member", "_id": id, "_version": 2, "_routing": id, "found": true,
                       "_source": {"doc": stored}}),
            )
        } else if id == missing_r {
            (
                404,
                json!({"error": {"type": "index_not_found_exception"}, "status": 404}),
            )
        } else {
            (404, json!({"_index": "member", "_id": id, "found": false}))
        })
    });
    let index = connect(&fake).await;

    assert_eq!(index.by_id(doc.member_id).await.unwrap(), Some(doc.clone()));
    let unknown = Uuid::now_v7();
    assert_eq!(index.by_id(unknown).await.unwrap(), None);
    let err = index
        .by_id(missing_index.parse().unwrap())
        .await
        .expect_err("a missing index is not a missing document");
    assert!(matches!(err, SinkError::Unavailable { .. }), "{err:?}");

    let requests = fake.requests_after_setup();
    assert_eq!(requests.len(), 3);
    let get = &requests[0];
    assert_eq!(get.method, Method::GET);
    assert_eq!(get.path, format!("/member/_doc/{known}"));
    assert_eq!(
        get.query(),
        vec![
            ("_source_includes", "doc"),
            ("realtime", "false"),
            ("routing", known.as_str())
        ]
    );
    assert_eq!(
        requests[1].query(),
        vec![
            ("_source_includes", "doc"),
            ("realtime", "false"),
            ("routing", unknown.to_string().as_str())
        ]
    );
}

/// A fake cluster whose identity index holds `entries` (key -> source) and whose member index
/// holds `docs`.
fn lookup_fake(
    entries: Vec<(&'static str, Value)>,
    docs: Vec<MemberDocument>,
) -> FakeElasticsearch {
    FakeElasticsearch::start(move |r| {
        if r.path == "/member_identity/_search" {
            let key = r.json()["query"]["bool"]["filter"][0]["ids"]["values"][0].clone();
            let hits: Vec<Value> = entries
                .iter()
                .filter(|(k, _)| json!(k) == key)
                .map(|(k, source)| json!({"_index": "member_identity-000001", "_id": k, "_score": 0.0, "_source": source}))
                .collect();
            return Some((
                200,
                json!({"took": 1, "timed_out": false,
                       "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
                       "hits": {"max_score": null, "hits": hits}}),
            ));
        }
        let id = r.path.strip_prefix("/member/_doc/")?;
        let doc = docs.iter().find(|d| d.member_id.to_string() == id);
        Some(match doc {
            Some(doc) => (
                200,
                json!({"_index": "member-000001", "_id": id, "found": true, "_source": {"doc": doc}}),
            ),
            None => (
                404,
                json!({"_index": "member-000001", "_id": id, "found": false}),
            ),
        })
    })
}

#[tokio::test]
async fn identity_lookup_is_a_routed_id_filter_then_a_routed_get_of_the_holder() {
    let card = identity("elong_card", "600012345678");
    let b = registered_with(&[(&card, 3)]);
    let holder = last(&b).member_id;
    let fake = lookup_fake(
        vec![(
            "elong_card:600012345678",
            json!({"member_id": holder, "generation": 3}),
        )],
        vec![last(&b).clone()],
    );
    let index = connect(&fake).await;

    assert_eq!(
        index.by_identity(&card.key()).await.unwrap().as_ref(),
        Some(last(&b))
    );
    let other = identity("mobile", "13800138000");
    assert_eq!(index.by_identity(&other.key()).await.unwrap(), None);

    let requests = fake.requests_after_setup();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let search = &requests[0];
    assert_eq!(search.method, Method::POST);
    assert_eq!(search.path, "/member_identity/_search");
    assert_eq!(
        search.query(),
        vec![
            ("allow_partial_search_results", "false"),
            ("routing", "elong_card:600012345678")
        ]
    );
    assert_eq!(
        search.json(),
        json!({
            "size": 1,
            "track_total_hits": false,
            "query": {"bool": {"filter": [{"ids": {"values": ["elong_card:600012345678"]}}]}}
        })
    );
    let get = &requests[1];
    assert_eq!(get.path, format!("/member/_doc/{holder}"));
    assert!(get.query().contains(&("realtime", "false")));
    assert!(get
        .query()
        .contains(&("routing", holder.to_string().as_str())));
    // The unknown mobile: one search, no get.
    assert_eq!(requests[2].path, "/member_identity/_search");
}

#[tokio::test]
async fn a_released_entry_or_a_holder_that_released_since_is_absent() {
    let card = identity("elong_card", "600012345678");
    // The entry is a release: nobody holds the card.
    let fake = lookup_fake(
        vec![("elong_card:600012345678", json!({"generation": 2}))],
        vec![],
    );
    let index = connect(&fake).await;
    assert_eq!(index.by_identity(&card.key()).await.unwrap(), None);
    assert_eq!(fake.requests_after_setup().len(), 1, "no get for a release");

    // The entry names A at generation 1, A's document released it at 2 (the entry's own
    // release not yet visible): absent, not A's document.
    let mut h = registered_with(&[(&card, 1)]);
    h.push(
        MemberEvent::IdentityUnbound {
            identity: card.clone(),
            reason: UnbindReason::MemberRequest,
        },
        Some(2),
    );
    let doc = last(&h).clone();
    let fake = lookup_fake(
        vec![(
            "elong_card:600012345678",
            json!({"member_id": doc.member_id, "generation": 1}),
        )],
        vec![doc],
    );
    let index = connect(&fake).await;
    assert_eq!(index.by_identity(&card.key()).await.unwrap(), None);
}

#[tokio::test]
async fn a_holder_document_behind_its_entry_is_read_once_in_real_time() {
    let card = identity("elong_card", "600012345678");
    // The entry says B holds the card at 3; B's refreshed document predates the bind.
    let b = registered_with(&[(&card, 3)]);
    let before = b.records()[0].document.clone();
    let after = last(&b).clone();
    let holder = after.member_id;
    let fake = FakeElasticsearch::start(move |r| {
        if r.path == "/member_identity/_search" {
            return Some((
                200,
                json!({"hits": {"hits": [{"_id": "k", "_source": {"member_id": holder, "generation": 3}}]}}),
            ));
        }
        r.path.strip_prefix("/member/_doc/")?;
        let realtime = r.query.iter().any(|(k, v)| k == "realtime" && v == "true");
        let doc = if realtime { &after } else { &before };
        Some((200, json!({"found": true, "_source": {"doc": doc}})))
    });
    let index = connect(&fake).await;
    assert_eq!(
        index.by_identity(&card.key()).await.unwrap().as_ref(),
        Some(last(&b))
    );
    let gets: Vec<_> = fake
        .requests_after_setup()
        .into_iter()
        .filter(|r| r.method == Method::GET)
        .collect();
    assert_eq!(gets.len(), 2);
    assert!(gets[1].query().contains(&("realtime", "true")));
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    // Nothing listens on a port that was just released.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let err = ElasticsearchIndex::connect(
        &format!("http://127.0.0.1:{port}"),
        SearchCluster::Backup,
        options(),
    )
    .await
    .err()
    .expect("nothing listens");
    assert!(
        matches!(
            err,
            SearchError::Unavailable {
                target: "search-backup",
                ..
            }
        ),
        "{err:?}"
    );

    // A cluster that goes away after setup: every call is Unavailable.
    let mut fake = FakeElasticsearch::start(|_| None);
    let index = ElasticsearchIndex::connect(&fake.url, SearchCluster::Backup, options())
        .await
        .unwrap();
    fake.stop();
    let card = identity("elong_card", "600012345678");
    let h = registered_with(&[(&card, 1)]);
    for err in [
        index.apply(h.records()).await.unwrap_err(),
        index.by_id(last(&h).member_id).await.unwrap_err(),
        index.by_identity(&card.key()).await.unwrap_err(),
    ] {
        match err {
            SinkError::Unavailable { target, .. } => assert_eq!(target, "search-backup"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn one_client_per_cluster_url_with_credentials_from_the_url() {
    let fakes: Vec<FakeElasticsearch> =
        (0..3).map(|_| FakeElasticsearch::start(|_| None)).collect();
    let with_user = |f: &FakeElasticsearch| f.url.replace("http://", "http://member:p%40ss@");
    let settings = Settings::load_from(
        None,
        [
            ("MEMBER__SEARCH__ENGINE", "elasticsearch".to_owned()),
            ("MEMBER__SEARCH__REFRESH_MS", "500".to_owned()),
            (
                "MEMBER__SEARCH__ELASTICSEARCH__PRIMARY_URL",
                with_user(&fakes[0]),
            ),
            (
                "MEMBER__SEARCH__ELASTICSEARCH__BACKUP_URL",
                fakes[1].url.clone(),
            ),
            (
                "MEMBER__SEARCH__ELASTICSEARCH__MARKETING_URL",
                fakes[2].url.clone(),
            ),
            ("MEMBER__SEARCH__ELASTICSEARCH__SHARDS", "2".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    )
    .unwrap();
    for cluster in SearchCluster::ALL {
        let opened = SearchIndex::open(&settings, cluster).await.unwrap();
        assert!(matches!(opened, SearchIndex::Elasticsearch(_)));
        assert_eq!(opened.sink().target(), cluster.target());
        assert_eq!(opened.reader().target(), cluster.target());
    }
    for fake in &fakes {
        let requests = fake.requests();
        assert_eq!(requests.len(), 6, "each cluster set up once on its own url");
        let settings = &requests[0].json()["template"]["settings"];
        assert_eq!(settings["number_of_shards"], json!(2));
        assert_eq!(settings["number_of_replicas"], json!(0));
        assert_eq!(settings["refresh_interval"], json!("500ms"));
    }
    // member:p@ss, percent-decoded from the url, as basic authentication.
    let expected = "Basic bWVtYmVyOnBAc3M=";
    for r in fakes[0].requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(expected),
            "{} {}",
            r.method,
            r.path
        );
    }
    assert!(fakes[1]
        .requests()
        .iter()
        .all(|r| r.authorization.is_none()));
}

#[tokio::test]
async fn invalid_index_names_and_urls_are_refused() {
    let mut bad = options();
    bad.index = "Member*".into();
    let err = ElasticsearchIndex::connect("http://127.0.0.1:9", SearchCluster::Primary, bad)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, SearchError::InvalidIndexName { .. }),
        "{err:?}"
    );
    let err = ElasticsearchIndex::connect("ftp://127.0.0.1:9", SearchCluster::Primary, options())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SearchError::InvalidUrl { .. }), "{err:?}");
}
