//! The member tool's side of the embedded index: listing and removing documents (verify and
//! repair), and building a new generation and handing it over (rebuild).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::tantivy::schema::IndexRecordOption;
use ::tantivy::{DocSet, TERMINATED};
use uuid::Uuid;

use super::generations::{self, CURRENT, NEXT, PAUSED};
use super::{blocking, tantivy_error, Mode, SearchCluster, SearchError, TantivyIndex};
use member_projections::SinkError;

impl TantivyIndex {
    /// Every member with a live document in the (refreshed) snapshot.
    pub async fn member_ids(&self) -> Result<Vec<Uuid>, SinkError> {
        self.refresh().await?;
        let target = self.shared.cluster.target();
        let searcher = self.searcher();
        let field = self.shared.fields.member_id;
        blocking(target, move || {
            let mut ids = Vec::new();
            for segment in searcher.segment_readers() {
                let inverted = segment
                    .inverted_index(field)
                    .map_err(|e| tantivy_error(target, e))?;
                let alive = segment.alive_bitset();
                let mut terms = inverted
                    .terms()
                    .stream()
                    .map_err(|e| SinkError::unavailable(target, e))?;
                while terms.advance() {
                    let mut postings = inverted
                        .read_postings_from_terminfo(terms.value(), IndexRecordOption::Basic)
                        .map_err(|e| SinkError::unavailable(target, e))?;
                    let mut doc = postings.doc();
                    let mut live = false;
                    while doc != TERMINATED {
                        if alive.is_none_or(|a| a.is_alive(doc)) {
                            live = true;
                            break;
                        }
                        doc = postings.advance();
                    }
                    if live {
                        let id = std::str::from_utf8(terms.key())
                            .ok()
                            .and_then(|s| Uuid::parse_str(s).ok())
                            .ok_or_else(|| {
                                SinkError::corrupt(target, "a member_id term is not a uuid")
                            })?;
                        ids.push(id);
                    }
                }
            }
            ids.sort();
            ids.dedup();
            Ok(ids)
        })
        .await
    }

    /// Deletes the documents of `members` and commits (needs the writer).
    pub async fn remove(&self, members: &[Uuid]) -> Result<(), SinkError> {
        let target = self.shared.cluster.target();
        let fields = self.shared.fields;
        let members = members.to_vec();
        let mut guard = self.shared.state.clone().lock_owned().await;
        blocking(target, move || {
            let writer = guard
                .writer
                .as_mut()
                .ok_or_else(|| SinkError::unavailable(target, "index not writable"))?;
            for m in members {
                writer.writer.delete_term(fields.member_term(m));
            }
            writer.commit().map_err(|e| tantivy_error(target, e))
        })
        .await?;
        self.refresh().await
    }
}

/// Whether a process holds the writer of the cluster's live generation (tantivy's lock file).
pub async fn live_is_owned(root: PathBuf) -> bool {
    let Some(current) = generations::read(&root, CURRENT) else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let Ok(index) = ::tantivy::Index::open_in_dir(generations::dir(&root, &current)) else {
            return false;
        };
        match index.writer::<::tantivy::TantivyDocument>(15_000_000) {
            Ok(writer) => {
                drop(writer);
                false
            }
            Err(::tantivy::TantivyError::LockFailure(..)) => true,
            Err(_) => false,
        }
    })
    .await
    .unwrap_or(false)
}

/// A rebuild's new generation of a cluster's index, and its hand-over.
pub struct NextGeneration {
    root: PathBuf,
    name: String,
    index: std::sync::Arc<TantivyIndex>,
    /// Whether a running owner paused for this generation (then the owner swaps it in).
    owner_paused: bool,
}

/// How long a rebuild waits for the owner of the live index to pause.
pub const PAUSE_WAIT: Duration = Duration::from_secs(60);

impl NextGeneration {
    /// Creates an empty generation next to the live one (deleting leftovers of interrupted
    /// rebuilds).
    pub async fn create(root: PathBuf, cluster: SearchCluster) -> Result<Self, SearchError> {
        let live = generations::current_or_create(&root).map_err(|source| SearchError::Io {
            target: cluster.target(),
            path: root.clone(),
            source,
        })?;
        let _ = generations::remove(&root, NEXT);
        generations::delete_others(&root, &live);
        let name = generations::new_name(&root);
        let index = std::sync::Arc::new(
            TantivyIndex::open_generation(&root, &name, cluster, Duration::from_secs(3600)).await?,
        );
        debug_assert_eq!(index.shared.mode, Mode::Generation);
        Ok(Self {
            root,
            name,
            index,
            owner_paused: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn target(&self) -> &'static str {
        self.index.shared.cluster.target()
    }

    /// The sink that writes this generation.
    pub fn sink(&self) -> std::sync::Arc<dyn member_projections::Sink> {
        self.index.clone()
    }

    /// Starts bulk loading: until [`NextGeneration::finish_bulk_load`], `apply` adds documents
    /// without the version guard and commits rarely. Only for the fold, which writes every
    /// member once into this empty generation.
    pub async fn begin_bulk_load(&self) {
        self.index.shared.state.lock().await.bulk = true;
    }

    /// Commits what the bulk load added and returns to guarded, per-batch-durable writes.
    pub async fn finish_bulk_load(&self) -> Result<(), SinkError> {
        let target = self.target();
        let mut guard = self.index.shared.state.clone().lock_owned().await;
        blocking(target, move || {
            let state = &mut *guard;
            state.bulk = false;
            state.uncommitted = 0;
            let writer = state
                .writer
                .as_mut()
                .ok_or_else(|| SinkError::unavailable(target, "index closed"))?;
            writer.commit().map_err(|e| tantivy_error(target, e))
        })
        .await
    }

    /// Asks the owner of the live index (if any) to stop writing, and waits until it has.
    /// Afterwards nothing writes the live generation; the caller applies the last records to
    /// this generation and calls [`NextGeneration::swap_in`].
    pub async fn pause_owner(&mut self) -> Result<(), SinkError> {
        let target = self.index.shared.cluster.target();
        if !live_is_owned(self.root.clone()).await {
            return Ok(());
        }
        generations::write(&self.root, NEXT, &self.name)
            .map_err(|e| SinkError::unavailable(target, e))?;
        let started = Instant::now();
        while started.elapsed() < PAUSE_WAIT {
            if generations::read(&self.root, PAUSED).as_deref() == Some(self.name.as_str()) {
                self.owner_paused = true;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = generations::remove(&self.root, NEXT);
        Err(SinkError::unavailable(
            target,
            "the process that owns the live index did not pause for the hand-over",
        ))
    }

    /// Makes this generation the live one: closes its writer and points `CURRENT` at it. A
    /// paused owner then opens it and deletes the old generation; without an owner, this does.
    pub async fn swap_in(self) -> Result<(), SinkError> {
        let target = self.index.shared.cluster.target();
        self.index.close().await?;
        let old = generations::read(&self.root, CURRENT);
        generations::write(&self.root, CURRENT, &self.name)
            .map_err(|e| SinkError::unavailable(target, e))?;
        let _ = generations::remove(&self.root, NEXT);
        if !self.owner_paused {
            if let Some(old) = old.filter(|o| *o != self.name) {
                let _ = std::fs::remove_dir_all(generations::dir(&self.root, &old));
            }
        }
        Ok(())
    }

    /// Gives up: releases a paused owner and deletes the generation.
    pub async fn abandon(self) {
        let _ = self.index.close().await;
        let _ = generations::remove(&self.root, NEXT);
        let _ = std::fs::remove_dir_all(generations::dir(&self.root, &self.name));
    }
}
