//! The embedded search engine: one tantivy index per cluster, in `<data_dir>/search/<cluster>`,
//! as generations that a rebuild swaps blue-green under a running owner ([`generations`]).
//!
//! It behaves like an Elasticsearch index on purpose, so that the query path (fallbacks,
//! version fences) is exercised locally against the same consistency model it meets in
//! production:
//! - **Near-real-time reads.** Readers search a snapshot that a background task reloads every
//!   `refresh_ms` (Elasticsearch's `refresh_interval`): a write becomes visible on the next
//!   refresh, not when `apply` returns. [`TantivyIndex::refresh`] forces one, like `POST _refresh`.
//! - **Durable writes.** `apply` commits once per batch; tantivy's commit fsyncs the new segments
//!   and then atomically replaces `meta.json`, so a batch is on disk when `apply` returns, and a
//!   crash loses nothing that was acknowledged.
//! - **Version guard without a read-modify-write race.** There is a single writer (behind a
//!   mutex): for a batch it keeps each member's highest-version record, reads the stored
//!   versions through a second reader that is reloaded right after every commit (so it sees
//!   everything committed, independently of the near-real-time reader), and replaces
//!   (`delete_term` + `add_document`) only the documents that get newer. Nothing else writes the
//!   directory: tantivy's lock file refuses a second writer, even from another process.
//!
//! Memory: the writer gets [`WRITER_MEMORY_BUDGET`] bytes with one indexing thread and one merge
//! thread. The budget is a ceiling at which tantivy flushes a segment, not an allocation; since
//! every batch is committed, the arena holds at most one batch. Measured: a 10,000-record batch
//! leaves about 28 MB resident per index (the allocator keeps the arena after the commit); with
//! three clusters the worst case is 3 x 50 MB, within `member run`'s 300 MB resident target.
//!
//! tantivy's calls block (file I/O, mmap page faults, joining its threads), so they all run on
//! tokio's blocking pool.

pub mod generations;
mod maintenance;
mod open;
use self::open::open_dir;
mod reader;

pub use self::maintenance::{live_is_owned, NextGeneration};
mod schema;
mod sink;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ::tantivy::collector::DocSetCollector;
use ::tantivy::directory::MmapDirectory;
use ::tantivy::indexer::IndexWriterOptions;
use ::tantivy::query::TermQuery;
use ::tantivy::schema::IndexRecordOption;
use ::tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, TantivyError,
    Term, TERMINATED,
};
use async_trait::async_trait;
use member_domain::IdentityKey;
use member_projections::{MemberDocument, MemberReader, MemberRecord, Sink, SinkError};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use uuid::Uuid;

use self::generations::{CURRENT, NEXT, PAUSED};
use self::schema::Fields;
use super::{holder_of, SearchCluster, SearchError};

/// The writer's indexing memory budget (one indexing thread): 50 MB. tantivy's minimum is 15 MB
/// per thread.
pub const WRITER_MEMORY_BUDGET: usize = 50_000_000;

/// The directory of a cluster's index generations: `<data_dir>/search/<cluster>`.
pub fn cluster_dir(data_dir: &Path, cluster: SearchCluster) -> PathBuf {
    data_dir.join("search").join(cluster.name())
}

/// The single writer, and the reader that sees every commit it made.
struct Writer {
    writer: IndexWriter,
    /// Reloaded right after each commit: the write guard's view of the stored versions.
    committed: IndexReader,
}

impl Writer {
    /// Commits what was queued and makes it visible to the write guard's reader.
    fn commit(&mut self) -> Result<(), TantivyError> {
        self.writer.commit()?;
        self.committed.reload()
    }
}

/// How an index follows the generation pointers (see [`generations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The live index of a cluster: opens `CURRENT`, and hands over to a rebuild's generation.
    Live,
    /// One fixed generation, written by a rebuild.
    Generation,
    /// The live generation, without a writer (for `member verify` next to a running owner).
    ReadOnly,
}

/// What the writer side is doing.
struct State {
    generation: String,
    /// `None` when closed, read-only, or paused for a rebuild.
    writer: Option<Writer>,
    /// The generation a rebuild asked to swap in, and since when this index stopped writing.
    paused: Option<(String, Instant)>,
    /// Bulk loading an empty generation (a rebuild's fold): no guard, rare commits.
    bulk: bool,
    /// Documents added since the last commit while bulk loading.
    uncommitted: usize,
}

struct Shared {
    cluster: SearchCluster,
    fields: Fields,
    root: PathBuf,
    mode: Mode,
    state: Arc<Mutex<State>>,
    /// The near-real-time reader: reloaded every refresh interval; replaced on a swap.
    searcher: RwLock<IndexReader>,
}

/// A cluster's embedded index; a [`Sink`] and a [`MemberReader`].
pub struct TantivyIndex {
    shared: Arc<Shared>,
    refresher: JoinHandle<()>,
}

impl TantivyIndex {
    /// Opens (or creates) the live index of the cluster directory `root` (its `CURRENT`
    /// generation) and starts its refresher, which also follows a rebuild's hand-over. Fails if
    /// another writer (in this process or another) holds the index, or if the index on disk was
    /// built with another schema.
    pub async fn open(
        root: &Path,
        cluster: SearchCluster,
        refresh: Duration,
    ) -> Result<Self, SearchError> {
        let target = cluster.target();
        let generation =
            generations::current_or_create(root).map_err(|source| SearchError::Io {
                target,
                path: root.to_path_buf(),
                source,
            })?;
        Self::open_mode(root, generation, Mode::Live, cluster, refresh).await
    }

    /// Opens generation `name` of `root` for writing (created if missing), without following
    /// the pointers: a rebuild's new generation.
    pub async fn open_generation(
        root: &Path,
        name: &str,
        cluster: SearchCluster,
        refresh: Duration,
    ) -> Result<Self, SearchError> {
        Self::open_mode(root, name.to_owned(), Mode::Generation, cluster, refresh).await
    }

    /// Opens the live generation for reading only; works while another process owns the index.
    pub async fn open_read_only(
        root: &Path,
        cluster: SearchCluster,
        refresh: Duration,
    ) -> Result<Self, SearchError> {
        let generation = generations::read(root, CURRENT).ok_or_else(|| SearchError::Io {
            target: cluster.target(),
            path: root.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no CURRENT generation"),
        })?;
        Self::open_mode(root, generation, Mode::ReadOnly, cluster, refresh).await
    }

    async fn open_mode(
        root: &Path,
        generation: String,
        mode: Mode,
        cluster: SearchCluster,
        refresh: Duration,
    ) -> Result<Self, SearchError> {
        let target = cluster.target();
        let dir = generations::dir(root, &generation);
        let opened = open_dir(dir.clone(), mode != Mode::ReadOnly)
            .await
            .map_err(|e| e.into_search_error(target, dir))?;
        let shared = Arc::new(Shared {
            cluster,
            fields: opened.fields,
            root: root.to_path_buf(),
            mode,
            state: Arc::new(Mutex::new(State {
                generation,
                writer: opened.writer,
                paused: None,
                bulk: false,
                uncommitted: 0,
            })),
            searcher: RwLock::new(opened.searcher),
        });
        let refresher = tokio::spawn(refresh_every(refresh, Arc::downgrade(&shared)));
        tracing::info!(
            target: "member::search",
            cluster = target,
            refresh_ms = refresh.as_millis() as u64,
            mode = ?mode,
            "tantivy index opened"
        );
        Ok(Self { shared, refresher })
    }

    pub fn cluster(&self) -> SearchCluster {
        self.shared.cluster
    }

    /// The generation this index serves.
    pub async fn generation(&self) -> String {
        self.shared.state.lock().await.generation.clone()
    }

    /// Makes every committed write visible to readers now (Elasticsearch's `POST _refresh`),
    /// instead of at the next periodic refresh.
    pub async fn refresh(&self) -> Result<(), SinkError> {
        let reader = self.reader_handle();
        let target = self.shared.cluster.target();
        blocking(target, move || {
            reader.reload().map_err(|e| tantivy_error(target, e))
        })
        .await
    }

    /// Stops the refresher, waits for running merges and releases the index (its lock file), so
    /// that it can be opened again. Later writes fail with `Unavailable`; reads keep serving the
    /// last refreshed snapshot.
    pub async fn close(&self) -> Result<(), SinkError> {
        self.refresher.abort();
        let target = self.shared.cluster.target();
        let Some(writer) = self.shared.state.lock().await.writer.take() else {
            return Ok(());
        };
        blocking(target, move || {
            writer
                .writer
                .wait_merging_threads()
                .map_err(|e| tantivy_error(target, e))
        })
        .await
    }

    fn reader_handle(&self) -> IndexReader {
        self.shared
            .searcher
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn searcher(&self) -> Searcher {
        self.reader_handle().searcher()
    }
}

impl Drop for TantivyIndex {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

/// Reloads the near-real-time reader every `period`, and (for a live index) follows a rebuild's
/// hand-over, until the index is dropped or closed (which abort this task). It holds the index
/// only while it works on a tick, so that dropping the last handle releases the writer (and its
/// lock file) then, not whenever the runtime gets round to dropping this aborted task.
async fn refresh_every(period: Duration, shared: std::sync::Weak<Shared>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let target = shared.cluster.target();
        let reader = shared
            .searcher
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match tokio::task::spawn_blocking(move || reader.reload()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(target: "member::search", cluster = target, %error, "refresh failed")
            }
            Err(error) => {
                tracing::warn!(target: "member::search", cluster = target, %error, "refresh task failed")
            }
        }
        if shared.mode == Mode::Live {
            follow_hand_over(&shared).await;
        }
    }
}

/// The owner's side of the hand-over protocol (see [`generations`]).
async fn follow_hand_over(shared: &Arc<Shared>) {
    let target = shared.cluster.target();
    let root = &shared.root;
    let next = generations::read(root, NEXT);
    let mut state = shared.state.clone().lock_owned().await;
    match state.paused.clone() {
        None => {
            let Some(next) = next.filter(|n| *n != state.generation) else {
                return;
            };
            if let Some(writer) = state.writer.take() {
                // Dropping the writer after its merges releases the lock on the generation.
                let joined =
                    tokio::task::spawn_blocking(move || writer.writer.wait_merging_threads()).await;
                if !matches!(joined, Ok(Ok(()))) {
                    tracing::warn!(target: "member::search", cluster = target, "writer did not close cleanly");
                }
            }
            state.paused = Some((next.clone(), Instant::now()));
            if let Err(error) = generations::write(root, PAUSED, &next) {
                tracing::warn!(target: "member::search", cluster = target, %error, "could not write PAUSED");
            }
            tracing::info!(target: "member::search", cluster = target, generation = %next, "paused writing for a rebuild's hand-over");
        }
        Some((waiting_for, since)) => {
            let current = generations::read(root, CURRENT);
            let (open, reason) = if current.as_deref() == Some(waiting_for.as_str()) {
                (waiting_for.clone(), "switched to the rebuilt generation")
            } else if next.as_deref() != Some(waiting_for.as_str())
                || since.elapsed() > generations::PAUSE_LIMIT
            {
                (
                    state.generation.clone(),
                    "the rebuild gave up; resumed on the current generation",
                )
            } else {
                return;
            };
            let opened = match open_dir(generations::dir(root, &open), true).await {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!(target: "member::search", cluster = target, ?error, "cannot open the generation yet; retrying");
                    return;
                }
            };
            *shared
                .searcher
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = opened.searcher;
            state.writer = opened.writer;
            state.paused = None;
            let old = std::mem::replace(&mut state.generation, open.clone());
            drop(state);
            let _ = generations::remove(root, PAUSED);
            if old != open {
                if let Err(error) = std::fs::remove_dir_all(generations::dir(root, &old)) {
                    tracing::warn!(target: "member::search", cluster = target, %error, "could not delete the old generation");
                }
            } else {
                let _ = generations::remove(root, NEXT);
            }
            tracing::info!(target: "member::search", cluster = target, generation = %open, "{reason}");
        }
    }
}

/// Runs a blocking tantivy call on the blocking pool.
async fn blocking<T: Send + 'static>(
    target: &'static str,
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SinkError::unavailable(target, e))?
}

fn tantivy_error(target: &str, error: TantivyError) -> SinkError {
    match error {
        TantivyError::DataCorruption(_) | TantivyError::SchemaError(_) => {
            SinkError::corrupt(target, error.to_string())
        }
        other => SinkError::unavailable(target, other),
    }
}
