//! Blue-green for the embedded index: a cluster directory holds generations of the index, one
//! subdirectory each, and small pointer files say which one is live.
//!
//! ```text
//! <data_dir>/search/<cluster>/
//!     CURRENT   the live generation (e.g. g1732371234567); readers and the projector open it
//!     NEXT      written by a rebuild that wants to swap its generation in
//!     PAUSED    written by the process that owns the live index once it stopped writing
//!     g.../     the generations
//! ```
//!
//! tantivy allows one writer per index, and the live index is owned by the process running its
//! projector, so a rebuild (another process) cannot write the live generation, and cannot simply
//! swap directories under a running process either. The hand-over is a handshake through the
//! pointer files (ADR 0009):
//! 1. the rebuild builds its generation and catches it up with the topic, then writes `NEXT`;
//! 2. the owner, at its next refresh tick, stops writing (its projector backs off and holds its
//!    batch), releases its writer and writes `PAUSED`;
//! 3. the rebuild applies the last records (everything the owner applied is on the topic, so
//!    nothing is lost), closes its writer, writes `CURRENT` and removes `NEXT`;
//! 4. the owner opens the new generation, swaps its readers, resumes writing (re-applying its
//!    held batch is harmless under the version guard) and deletes the old generation.
//!
//! Readers keep serving the old generation until step 4; they never see a half-built index. If
//! the rebuild disappears after step 2, the owner resumes on its old generation once `NEXT` is
//! gone or after [`PAUSE_LIMIT`]. Without an owner (no projector running), the rebuild swaps
//! `CURRENT` itself.
//!
//! Pointer files are replaced atomically (write a temporary file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The live generation.
pub const CURRENT: &str = "CURRENT";
/// The generation a rebuild wants to swap in.
pub const NEXT: &str = "NEXT";
/// The generation the owner paused for.
pub const PAUSED: &str = "PAUSED";

/// How long an owner stays paused for a rebuild that does not finish its swap.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(120);

/// A new generation name under `root`: `g<unix millis>`, ordered by creation time, and never the
/// name of an existing generation (two can be created within one millisecond).
pub fn new_name(root: &Path) -> String {
    let mut n = chrono::Utc::now().timestamp_millis();
    loop {
        let name = format!("g{n}");
        if !dir(root, &name).exists() && read(root, CURRENT).as_deref() != Some(name.as_str()) {
            return name;
        }
        n += 1;
    }
}

/// Whether `name` is a generation name this code writes (guards paths read from pointer files).
pub fn is_generation(name: &str) -> bool {
    name.len() > 1 && name.starts_with('g') && name[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The directory of generation `name` under the cluster directory.
pub fn dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

/// The generation a pointer file names, if it exists and is valid.
pub fn read(root: &Path, pointer: &str) -> Option<String> {
    let text = std::fs::read_to_string(root.join(pointer)).ok()?;
    let name = text.trim();
    is_generation(name).then(|| name.to_owned())
}

/// Atomically points `pointer` at generation `name`.
pub fn write(root: &Path, pointer: &str, name: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(root)?;
    let tmp = root.join(format!(".{pointer}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(name.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, root.join(pointer))?;
    std::fs::File::open(root)?.sync_all()
}

/// Removes a pointer file (absent is fine).
pub fn remove(root: &Path, pointer: &str) -> std::io::Result<()> {
    match std::fs::remove_file(root.join(pointer)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The live generation, creating the first one (and `CURRENT`) when the cluster directory has
/// none yet.
pub fn current_or_create(root: &Path) -> std::io::Result<String> {
    if let Some(name) = read(root, CURRENT) {
        return Ok(name);
    }
    let name = new_name(root);
    std::fs::create_dir_all(dir(root, &name))?;
    write(root, CURRENT, &name)?;
    Ok(name)
}

/// Deletes every generation directory except `keep` (old generations after a swap, and
/// leftovers of interrupted rebuilds that are not the pending `NEXT`).
pub fn delete_others(root: &Path, keep: &str) {
    let pending = read(root, NEXT);
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_generation(&name) && name != keep && Some(&name) != pending.as_ref() {
            if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                tracing::warn!(target: "member::search", generation = %name, %error, "could not delete an old generation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_round_trip_and_refuse_foreign_names() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(read(root.path(), CURRENT), None);
        let first = current_or_create(root.path()).unwrap();
        assert!(is_generation(&first));
        assert_eq!(current_or_create(root.path()).unwrap(), first);
        write(root.path(), NEXT, "g42").unwrap();
        assert_eq!(read(root.path(), NEXT).as_deref(), Some("g42"));
        std::fs::write(root.path().join(NEXT), "../../etc").unwrap();
        assert_eq!(read(root.path(), NEXT), None);
        remove(root.path(), NEXT).unwrap();
        remove(root.path(), NEXT).unwrap();
        assert!(!is_generation("g"));
        assert!(!is_generation("x1"));
        // Names never repeat, even within one millisecond.
        let next = new_name(root.path());
        assert_ne!(next, first);
        std::fs::create_dir_all(dir(root.path(), &next)).unwrap();
        assert_ne!(new_name(root.path()), next);
    }
}
