//! `member import --from FILE.jsonl`: onboarding of the old databases' member relationships.
//!
//! Each record becomes a member through `CommandService` (the API's invariants), with a member id
//! derived from its legacy id. A record that would break a rule is never imported in part or
//! merged: it is quarantined ([`quarantine`]) with a reason code, for `member governance`.
//! Progress is checkpointed per file (SHA-256 of its content), so an interrupted import resumes
//! where it stopped; handling a line twice is harmless (an imported record is recognised, a
//! quarantined line keeps its one row), so a second run of the same file changes nothing.
//!
//! The first SIGINT/SIGTERM stops the import between two lines: the checkpoint is saved at the
//! next line, and running the same command again resumes there.
//!
//! Records are handled one after another, in file order: when two records claim one identity,
//! the first in the file wins, whether the import ran in one go or was resumed.

pub mod quarantine;
pub mod record;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use member_domain::{MemberCommand, MemberError};
use member_infra::config::Settings;
use member_infra::event_store::commands::{CommandError, CommandService};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use self::quarantine::{Checkpoint, NewEntry};
use self::record::{LegacyRecord, Reason};
use crate::shutdown::{Interrupted, Shutdown};

/// Lines between two checkpoints.
const CHECKPOINT_EVERY: u64 = 100;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    member import --from legacy-members.jsonl --report quarantine.jsonl\n  \
    member import --from legacy-members.jsonl --limit 10000    # a slice; run again to continue\n  \
    member import --from legacy-members.jsonl --rescan         # re-check every line\n\n\
    The line format is described in docs/operations/import-and-governance.md.\n\n\
    Exit codes: 0 every record of the file is imported; 2 some records are quarantined (see the \
    report and `member governance scan`); 1 the import failed (run it again: it resumes).")]
pub struct ImportArgs {
    /// The legacy export: one JSON record per line.
    #[arg(long, value_name = "FILE.jsonl")]
    pub from: PathBuf,
    /// Write every quarantined record of the file (line, legacy_id, reason) to this JSONL file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Handle at most this many lines in this run, then stop (the checkpoint keeps the place).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Handle every line again from the start instead of resuming at the checkpoint.
    #[arg(long)]
    pub rescan: bool,
}

/// What happened to one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    Blank,
    Imported { events: u64 },
    AlreadyImported,
    Quarantined(Reason),
}

#[derive(Debug, Default)]
struct Totals {
    lines: u64,
    imported: u64,
    events: u64,
    already_imported: u64,
    quarantined: HashMap<&'static str, u64>,
}

/// Runs `member import`. Returns the process exit code.
pub async fn run(
    settings: &Settings,
    args: ImportArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<i32> {
    let (digest, total_lines) =
        digest_and_count(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let pool = crate::app::event_store(settings).await?;
    let service = CommandService::new(pool.clone(), crate::app::vault(settings));
    let checkpoint = quarantine::load_checkpoint(&pool, &digest)
        .await
        .context("loading the import checkpoint")?;
    let start = match checkpoint {
        Some(at) if !args.rescan => at.next_line,
        _ => 1,
    };
    if start > 1 {
        tracing::info!(
            line = start,
            "resuming the import of this file at its checkpoint"
        );
    }

    let file = std::fs::File::open(&args.from)
        .with_context(|| format!("opening {}", args.from.display()))?;
    let mut reader = BufReader::new(file);
    let bar = crate::tools::progress::bar("import", Some(total_lines));
    bar.set_position(start.saturating_sub(1).min(total_lines));
    let mut totals = Totals::default();
    let mut line_number = 0u64;
    let mut buf = Vec::new();
    let mut stopped_by_limit = false;
    let mut stopped_by_signal = false;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .context("reading the file")?;
        if read == 0 {
            break;
        }
        line_number += 1;
        if line_number < start {
            continue;
        }
        if args.limit.is_some_and(|limit| totals.lines >= limit) {
            stopped_by_limit = true;
            break;
        }
        if shutdown.is_requested() {
            stopped_by_signal = true;
            break;
        }
        let handled = handle_line(&service, &pool, &digest, line_number, &buf).await;
        let handled = match handled {
            Ok(h) => h,
            Err(e) => {
                // Everything before this line is handled: keep the place for the next run.
                let at = Checkpoint {
                    next_line: line_number,
                    finished: false,
                };
                quarantine::save_checkpoint(&pool, &digest, at).await.ok();
                return Err(e.context(format!("line {line_number}")));
            }
        };
        totals.lines += 1;
        match handled {
            Handled::Blank => {}
            Handled::Imported { events } => {
                totals.imported += 1;
                totals.events += events;
            }
            Handled::AlreadyImported => totals.already_imported += 1,
            Handled::Quarantined(reason) => {
                *totals.quarantined.entry(reason.code()).or_default() += 1
            }
        }
        bar.inc(1);
        if line_number % CHECKPOINT_EVERY == 0 {
            let at = Checkpoint {
                next_line: line_number + 1,
                finished: false,
            };
            quarantine::save_checkpoint(&pool, &digest, at)
                .await
                .context("saving the import checkpoint")?;
        }
    }
    let stopped = stopped_by_limit || stopped_by_signal;
    let at = Checkpoint {
        // The line read last was not handled.
        next_line: if stopped {
            line_number
        } else {
            line_number + 1
        },
        finished: !stopped,
    };
    quarantine::save_checkpoint(&pool, &digest, at)
        .await
        .context("saving the import checkpoint")?;
    bar.finish_and_clear();

    let entries = quarantine::entries_of_file(&pool, &digest)
        .await
        .context("reading the quarantine")?;
    if let Some(path) = &args.report {
        write_report(path, &entries).with_context(|| format!("writing {}", path.display()))?;
    }
    let open = entries.iter().filter(|e| e.status == "open").count();
    let quarantined: u64 = totals.quarantined.values().sum();
    let mut reasons: Vec<_> = totals.quarantined.iter().collect();
    reasons.sort();
    println!(
        "import: {} lines handled (from line {start}), {} members imported ({} events), {} already imported, {} quarantined {:?}; {} open quarantined records for this file",
        totals.lines, totals.imported, totals.events, totals.already_imported, quarantined, reasons, open
    );
    if stopped_by_signal {
        return Err(Interrupted::new(format!(
            "the import stopped before line {line_number} (checkpoint saved); run the same \
             command again to resume there"
        ))
        .into());
    }
    if stopped_by_limit {
        println!("import: stopped at line {line_number} (--limit); run again to continue");
    } else if checkpoint.is_some_and(|c| c.finished) && !args.rescan {
        println!("import: this file was already imported completely (use --rescan to re-check it)");
    }
    Ok(if open == 0 { 0 } else { 2 })
}

/// Handles one line: imports it, recognises it as imported, or quarantines it. Errors only when
/// the store fails (the run stops; the line is handled again next time).
async fn handle_line(
    service: &CommandService,
    pool: &PgPool,
    digest: &str,
    line_number: u64,
    raw: &[u8],
) -> anyhow::Result<Handled> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if text.is_empty() {
        return Ok(Handled::Blank);
    }
    let at = Place {
        pool,
        digest,
        line_number,
    };
    let record = match record::parse_line(text) {
        Ok(record) => record,
        Err(malformed) => {
            return at
                .quarantine(
                    malformed.legacy_id.as_deref(),
                    None,
                    Reason::Malformed,
                    Some(&malformed.detail),
                )
                .await
        }
    };
    let identities = match record.registration() {
        Ok(identities) => identities,
        Err(refusal) => {
            return at
                .quarantine(
                    Some(&record.legacy_id),
                    Some(&record),
                    refusal.reason,
                    refusal.detail.as_deref(),
                )
                .await
        }
    };
    let member_id = record.member_id();
    let mut metadata = crate::tools::cause("import").metadata();
    metadata.extend([
        ("source".to_owned(), "import".to_owned()),
        ("import_file".to_owned(), digest.to_owned()),
        ("import_line".to_owned(), line_number.to_string()),
    ]);
    let command = MemberCommand::Register {
        identities: identities.clone(),
    };
    let refused = match service
        .execute_with_metadata(member_id, command, None, metadata)
        .await
    {
        Ok(executed) => {
            return Ok(Handled::Imported {
                events: executed.appended as u64,
            })
        }
        Err(e) => e,
    };
    let (reason, detail) = match refused {
        CommandError::Rejected(MemberError::MemberAlreadyRegistered) => {
            let existing = service
                .load(member_id)
                .await
                .context("loading the member of an already imported legacy id")?;
            if crate::tools::seed::same_identities(existing.identities(), &identities) {
                return Ok(Handled::AlreadyImported);
            }
            (Reason::LegacyIdReused, None)
        }
        CommandError::IdentityAlreadyBound { kind } => (
            Reason::IdentityOwnedByAnotherMember,
            Some(kind.as_str().to_owned()),
        ),
        CommandError::Rejected(MemberError::CrossAccountWechatBinding) => {
            (Reason::CrossAccountWechat, None)
        }
        other => return Err(anyhow::Error::new(other).context("registering a legacy member")),
    };
    at.quarantine(
        Some(&record.legacy_id),
        Some(&record),
        reason,
        detail.as_deref(),
    )
    .await
}

/// The line being handled.
struct Place<'a> {
    pool: &'a PgPool,
    digest: &'a str,
    line_number: u64,
}

impl Place<'_> {
    async fn quarantine(
        &self,
        legacy_id: Option<&str>,
        record: Option<&LegacyRecord>,
        reason: Reason,
        detail: Option<&str>,
    ) -> anyhow::Result<Handled> {
        let entry = NewEntry {
            file_digest: self.digest,
            line_number: self.line_number,
            legacy_id,
            member_id: record.map(LegacyRecord::member_id),
            reason: reason.code(),
            detail,
            record,
        };
        quarantine::insert(self.pool, entry)
            .await
            .context("quarantining a record")?;
        tracing::debug!(
            line = self.line_number,
            reason = reason.code(),
            "record quarantined"
        );
        Ok(Handled::Quarantined(reason))
    }
}

/// The SHA-256 of the file (its identity for the checkpoint) and its number of lines.
fn digest_and_count(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    let digest = hasher.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), lines))
}

/// One JSON object per quarantined record: no identity values, only where and why.
fn write_report(path: &Path, entries: &[quarantine::Entry]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in entries {
        let line = serde_json::json!({
            "entry": e.name(),
            "line": e.line_number,
            "legacy_id": e.legacy_id,
            "reason": e.reason,
            "detail": e.detail,
            "status": e.status,
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
}
