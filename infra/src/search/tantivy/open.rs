//! Opening a generation's directory: the index, its schema, the writer (for a writable index) and
//! the readers.

use super::*;

#[derive(Debug)]
pub(super) enum OpenError {
    Io(std::io::Error),
    Tantivy(TantivyError),
}

impl OpenError {
    pub(super) fn into_search_error(self, target: &'static str, path: PathBuf) -> SearchError {
        match self {
            OpenError::Io(source) => SearchError::Io {
                target,
                path,
                source,
            },
            OpenError::Tantivy(source) => SearchError::Tantivy {
                target,
                path,
                source,
            },
        }
    }
}

pub(super) struct Opened {
    pub(super) fields: Fields,
    pub(super) writer: Option<Writer>,
    pub(super) searcher: IndexReader,
}

pub(super) async fn open_dir(dir: PathBuf, writable: bool) -> Result<Opened, OpenError> {
    tokio::task::spawn_blocking(move || open_blocking(&dir, writable))
        .await
        .unwrap_or_else(|e| Err(OpenError::Io(std::io::Error::other(e))))
}

fn open_blocking(dir: &Path, writable: bool) -> Result<Opened, OpenError> {
    let (schema, fields) = Fields::schema();
    let index = if writable {
        std::fs::create_dir_all(dir).map_err(OpenError::Io)?;
        let directory = MmapDirectory::open(dir)
            .map_err(|e| OpenError::Tantivy(TantivyError::OpenDirectoryError(e)))?;
        Index::open_or_create(directory, schema).map_err(OpenError::Tantivy)?
    } else {
        Index::open_in_dir(dir).map_err(OpenError::Tantivy)?
    };
    let manual_reader = || {
        index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(OpenError::Tantivy)
    };
    let writer = if writable {
        let writer = index
            .writer_with_options(
                IndexWriterOptions::builder()
                    .memory_budget_per_thread(WRITER_MEMORY_BUDGET)
                    .num_worker_threads(1)
                    .num_merge_threads(1)
                    .build(),
            )
            .map_err(OpenError::Tantivy)?;
        Some(Writer {
            writer,
            committed: manual_reader()?,
        })
    } else {
        None
    };
    Ok(Opened {
        fields,
        writer,
        searcher: manual_reader()?,
    })
}
