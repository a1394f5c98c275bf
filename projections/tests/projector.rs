//! The projector loop with an in-memory source and the reference store: offsets are committed
//! only after a batch is applied, a sink outage holds the batch, nothing is skipped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use member_domain::{Identity, MemberEvent};
use member_projections::fixtures::MemberHistory;
use member_projections::memory::MemoryStore;
use member_projections::projector::{
    Projector, ProjectorSettings, RecordSource, SourceBatch, SourceError,
};
use member_projections::{MemberReader, MemberRecord};
use uuid::Uuid;

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

fn records(members: usize) -> Vec<MemberRecord> {
    let mut all = Vec::new();
    for i in 0..members {
        let mut h = MemberHistory::new(Uuid::now_v7());
        h.push(MemberEvent::MemberRegistered {}, None);
        let card = Identity::parse("elong_card", &format!("{:08}", i), None, None).unwrap();
        h.push(MemberEvent::IdentityBound { identity: card }, Some(1));
        all.extend(h.records().iter().cloned());
    }
    all
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

// Paused time: the sleeps below and the projector's retry backoff advance a virtual clock, so
// "400 ms of retries" is the same amount of work on a busy machine as on an idle one.
#[tokio::test(start_paused = true)]
async fn offsets_are_committed_only_after_the_sink_applied_the_batch() {
    let all = records(10);
    let committed = Arc::new(Mutex::new(0));
    let store = Arc::new(MemoryStore::new("memory"));
    store.set_down(true);
    let source = VecSource {
        records: all.clone(),
        cursor: 0,
        committed: committed.clone(),
    };
    let settings = ProjectorSettings {
        batch_size: 4,
        max_wait: Duration::from_millis(5),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(Projector::new(source, store.clone(), settings).run(async {
        let _ = stopped.await;
    }));

    // While the sink is down, nothing is committed and the loop keeps retrying the first batch.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*committed.lock().unwrap(), 0);
    assert_eq!(store.applied_batches(), 0);

    store.set_down(false);
    wait_for("every record committed", || {
        *committed.lock().unwrap() == all.len() as i64
    })
    .await;
    assert_eq!(store.len(), 10);
    for record in all.iter().filter(|r| r.event.version == 2) {
        let doc = store.by_id(record.event.member_id).await.unwrap().unwrap();
        assert_eq!(doc, record.document);
    }
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_the_sink_is_down_commits_nothing() {
    let committed = Arc::new(Mutex::new(0));
    let store = Arc::new(MemoryStore::new("memory"));
    store.set_down(true);
    let source = VecSource {
        records: records(3),
        cursor: 0,
        committed: committed.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        Projector::new(source, store.clone(), ProjectorSettings::default()).run(async {
            let _ = stopped.await;
        }),
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops promptly")
        .unwrap();
    assert_eq!(
        *committed.lock().unwrap(),
        0,
        "the unapplied batch will be delivered again"
    );
}
