//! The embedded tantivy search adapter: the sink contract, durability of a committed batch,
//! near-real-time visibility, and one directory per cluster. Real indexes in temporary
//! directories; nothing is mocked.

use std::path::Path;
use std::time::{Duration, Instant};

use member_domain::{Identity, MemberEvent};
use member_infra::config::Settings;
use member_infra::search::tantivy::{cluster_dir, generations};
use member_infra::search::{SearchCluster, SearchError, SearchIndex, TantivyIndex};
use member_projections::fixtures::MemberHistory;
use member_projections::projector::{
    Projector, ProjectorSettings, RecordSource, SourceBatch, SourceError,
};
use member_projections::{MemberDocument, MemberReader, MemberRecord, Sink};
use uuid::Uuid;

/// Short enough for the contract suite, which polls reads for up to 10 s.
const REFRESH: Duration = Duration::from_millis(100);
/// Long enough that no periodic refresh happens during a test.
const NEVER: Duration = Duration::from_secs(3600);

fn card(value: &str) -> Identity {
    Identity::parse("elong_card", value, None, None).unwrap()
}

/// A registered member holding `identity` (version 2).
fn member_with(identity: &Identity) -> (Uuid, MemberHistory) {
    let id = Uuid::now_v7();
    let mut h = MemberHistory::new(id);
    h.push(MemberEvent::MemberRegistered {}, None);
    h.push(
        MemberEvent::IdentityBound {
            identity: identity.clone(),
        },
        Some(1),
    );
    (id, h)
}

fn last(h: &MemberHistory) -> &MemberDocument {
    &h.records().last().unwrap().document
}

fn random_card() -> Identity {
    let n = Uuid::new_v4().as_u128() % 1_000_000_000_000;
    card(&format!("{n:012}"))
}

async fn open() -> (TantivyIndex, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), SearchCluster::Primary, REFRESH)
        .await
        .unwrap();
    assert_eq!(Sink::target(&index), "search-primary");
    assert_eq!(MemberReader::target(&index), "search-primary");
    (index, dir)
}

async fn close(index: TantivyIndex, _dir: tempfile::TempDir) {
    index.close().await.unwrap();
}

mod contract {
    member_tests::sink_contract_tests!(super::open, super::close);
}

#[tokio::test]
async fn a_write_is_visible_only_after_a_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .unwrap();
    let c = random_card();
    let (id, h) = member_with(&c);
    index.apply(h.records()).await.unwrap();

    // Committed and durable, but not refreshed: readers still see the old snapshot.
    assert_eq!(index.by_id(id).await.unwrap(), None);
    assert_eq!(index.by_identity(&c.key()).await.unwrap(), None);

    index.refresh().await.unwrap();
    assert_eq!(index.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    assert_eq!(
        index.by_identity(&c.key()).await.unwrap().as_ref(),
        Some(last(&h))
    );
    index.close().await.unwrap();
}

#[tokio::test]
async fn the_periodic_refresh_makes_writes_visible() {
    let dir = tempfile::tempdir().unwrap();
    let index = TantivyIndex::open(
        dir.path(),
        SearchCluster::Backup,
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let c = random_card();
    let (id, h) = member_with(&c);
    index.apply(h.records()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while index.by_id(id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "not visible after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(index.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    index.close().await.unwrap();
}

/// Reads `member_id` from the directory with a fresh tantivy reader, as another process would
/// after a crash: only what was committed to disk is there.
fn stored_version_on_disk(dir: &Path, member_id: Uuid) -> Option<u64> {
    use tantivy::collector::TopDocs;
    use tantivy::query::TermQuery;
    use tantivy::schema::{IndexRecordOption, Value};
    let live = generations::read(dir, generations::CURRENT).expect("a live generation");
    let index = tantivy::Index::open_in_dir(generations::dir(dir, &live)).unwrap();
    let schema = index.schema();
    let member_field = schema.get_field("member_id").unwrap();
    let version_field = schema.get_field("version").unwrap();
    let searcher = index.reader().unwrap().searcher();
    let query = TermQuery::new(
        tantivy::Term::from_field_text(member_field, &member_id.to_string()),
        IndexRecordOption::Basic,
    );
    let hits = searcher
        .search(&query, &TopDocs::with_limit(10).order_by_score())
        .unwrap();
    assert!(hits.len() <= 1, "one live document per member");
    hits.first().map(|(_, address)| {
        let doc: tantivy::TantivyDocument = searcher.doc(*address).unwrap();
        doc.get_first(version_field)
            .and_then(|v| v.as_u64())
            .unwrap()
    })
}

#[tokio::test]
async fn a_committed_batch_survives_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let c = random_card();
    let (id, mut h) = member_with(&c);
    h.push(
        MemberEvent::MemberDeactivated {
            actor: "test".into(),
            reason: "test".into(),
        },
        None,
    );
    let index = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .unwrap();
    index.apply(h.records()).await.unwrap();

    // On disk as soon as `apply` returns, while the writer is still open and nothing was
    // refreshed or closed.
    assert_eq!(stored_version_on_disk(dir.path(), id), Some(3));
    index.close().await.unwrap();
    drop(index);

    let reopened = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .unwrap();
    assert_eq!(reopened.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    assert_eq!(
        reopened.by_identity(&c.key()).await.unwrap().as_ref(),
        Some(last(&h))
    );
    // The guard reads the stored version after a reopen too: older records change nothing.
    reopened.apply(&h.records()[..2]).await.unwrap();
    reopened.refresh().await.unwrap();
    assert_eq!(reopened.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    assert_eq!(stored_version_on_disk(dir.path(), id), Some(3));
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn one_writer_per_index() {
    let dir = tempfile::tempdir().unwrap();
    let first = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .unwrap();
    let second = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER).await;
    assert!(
        matches!(second, Err(SearchError::Tantivy { .. })),
        "a second writer is refused"
    );
    first.close().await.unwrap();
    // Closed: the lock is released, and the closed index refuses writes.
    let c = random_card();
    let (_, h) = member_with(&c);
    assert!(first.apply(h.records()).await.is_err());
    let again = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .unwrap();
    again.close().await.unwrap();
}

/// A source with nothing to deliver (the projector idles until it is stopped).
/// A source with nothing to read; counts how often the projector asked.
struct Idle(std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl RecordSource for Idle {
    async fn next_batch(&mut self, _: usize, wait: Duration) -> Result<SourceBatch, SourceError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(wait).await;
        Ok(SourceBatch::default())
    }

    async fn commit(&mut self, _: &SourceBatch) -> Result<(), SourceError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stopped_projector_releases_the_index_while_readers_still_hold_it() {
    let dir = tempfile::tempdir().unwrap();
    let index = std::sync::Arc::new(
        TantivyIndex::open(dir.path(), SearchCluster::Primary, REFRESH)
            .await
            .unwrap(),
    );
    let c = random_card();
    let (id, h) = member_with(&c);
    index.apply(h.records()).await.unwrap();
    index.refresh().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let projector = Projector::new(
        Idle(polled.clone()),
        index.clone(),
        ProjectorSettings::default(),
    );
    let running = tokio::spawn(projector.run(async {
        let _ = stopped.await;
    }));
    member_tests::eventually("the projector runs", Duration::from_secs(10), || {
        let polled = polled.load(std::sync::atomic::Ordering::SeqCst);
        async move { polled > 0 }
    })
    .await;
    assert!(
        TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
            .await
            .is_err(),
        "while the projector runs, its index holds the writer"
    );
    stop.send(()).unwrap();
    running.await.unwrap();
    // `index` (a reader's handle, as the query API keeps one) is still alive: the writer's
    // lock must be free anyway, at once, for the tool that starts after the projector.
    let next = TantivyIndex::open(dir.path(), SearchCluster::Primary, NEVER)
        .await
        .expect("the stopped projector released the writer");
    assert_eq!(index.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    assert_eq!(next.by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    next.close().await.unwrap();
}

fn tantivy_settings(data_dir: &Path) -> Settings {
    Settings::load_from(
        None,
        [
            ("MEMBER__DATA_DIR", data_dir.to_str().unwrap()),
            ("MEMBER__SEARCH__ENGINE", "tantivy"),
            ("MEMBER__SEARCH__REFRESH_MS", "100"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap()
}

#[tokio::test]
async fn the_three_clusters_are_separate_directories() {
    let data = tempfile::tempdir().unwrap();
    let settings = tantivy_settings(data.path());
    let mut opened = Vec::new();
    for cluster in SearchCluster::ALL {
        let SearchIndex::Tantivy(index) = SearchIndex::open(&settings, cluster).await.unwrap()
        else {
            panic!("search.engine = tantivy opens tantivy");
        };
        assert_eq!(index.cluster(), cluster);
        assert_eq!(Sink::target(index.as_ref()), cluster.target());
        opened.push(index);
    }
    for (cluster, name) in SearchCluster::ALL
        .into_iter()
        .zip(["primary", "backup", "marketing"])
    {
        let dir = data.path().join("search").join(name);
        assert_eq!(cluster_dir(data.path(), cluster), dir);
        let live = generations::read(&dir, generations::CURRENT).expect("a live generation");
        assert!(
            generations::dir(&dir, &live).join("meta.json").is_file(),
            "{} holds an index",
            dir.display()
        );
    }

    // A write to one cluster is in that cluster only.
    let c = random_card();
    let (id, h) = member_with(&c);
    opened[0].apply(h.records()).await.unwrap();
    for index in &opened {
        index.refresh().await.unwrap();
    }
    assert_eq!(opened[0].by_id(id).await.unwrap().as_ref(), Some(last(&h)));
    assert_eq!(opened[1].by_id(id).await.unwrap(), None);
    assert_eq!(opened[2].by_identity(&c.key()).await.unwrap(), None);
    for index in &opened {
        index.close().await.unwrap();
    }
}

fn many_records(n: usize) -> Vec<MemberRecord> {
    (0..n)
        .map(|i| {
            let (_, h) = member_with(&card(&format!("{:012}", 100_000_000 + i)));
            h.records().last().unwrap().clone()
        })
        .collect()
}

/// Indexes a 10,000-record batch into each of the three clusters (kept open together) and checks
/// every document is there. (Its rate is measured by `member-bench run --only sinks`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_record_batch_per_cluster() {
    const N: usize = 10_000;
    let data = tempfile::tempdir().unwrap();
    let records = many_records(N);
    let mut opened = Vec::new();
    for cluster in SearchCluster::ALL {
        let index = TantivyIndex::open(&cluster_dir(data.path(), cluster), cluster, NEVER)
            .await
            .unwrap();
        index.apply(&records).await.unwrap();
        // The same batch again is all old versions: read by the guard, nothing written.
        index.apply(&records).await.unwrap();
        index.refresh().await.unwrap();
        for record in records.iter().step_by(97) {
            let doc = &record.document;
            assert_eq!(
                index.by_id(doc.member_id).await.unwrap().as_ref(),
                Some(doc)
            );
        }
        let key = records[N - 1].document.identities[0].key.clone();
        assert_eq!(
            index.by_identity(&key).await.unwrap().as_ref(),
            Some(&records[N - 1].document)
        );
        // Kept open, like `member run` keeps all three.
        opened.push(index);
    }
    for index in opened {
        index.close().await.unwrap();
    }
}
