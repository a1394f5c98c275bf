//! `member governance repair`: resolves findings of the scan, with who and why on every change.
//!
//! - `release` (quarantine entry): unbinds the record's identities from the members that hold
//!   them, with `UnbindReason::Governance { actor, note }`, then registers the record. Every event
//!   goes through `CommandService`, so the projections see it like any other, and carries
//!   `source=governance`, `actor`, `note` and `entry` in its metadata.
//! - `dismiss` (quarantine entry): closes it without touching any member; the actor and note are
//!   kept in the quarantine table.
//! - `unbind` (event-store finding): unbinds the abnormal openid with the governance reason.

use std::collections::HashMap;

use anyhow::{bail, Context};
use member_domain::{Identity, MemberCommand, MemberError, UnbindReason, WechatApp};
use member_infra::event_store::commands::{CommandError, CommandService};
use member_infra::event_store::vault::Vault;
use sqlx::PgPool;
use uuid::Uuid;

use super::scan::{self, State};
use crate::shutdown::{Interrupted, Shutdown};
use crate::tools::import::quarantine;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Resolution {
    /// Quarantine entry: unbind what other members hold of it (audited), then import it.
    Release,
    /// Quarantine entry: close it without changing any member.
    Dismiss,
    /// Event-store finding: unbind the abnormal openid.
    Unbind,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    member governance repair --entry q-12 --resolution release --actor alice --note 'ticket OPS-42: verified owner'\n  \
    member governance repair --entry q-13 --entry q-14 --resolution dismiss --actor alice --note 'test data'\n  \
    member governance repair --entry m-<member id>-elong_mp --resolution unbind --actor bob --note 'OPS-43'\n  \
    member governance repair --entry q-12 --resolution release --actor alice --note x --dry-run\n\n\
    Exit code 0 when every entry was resolved (or, with --dry-run, can be), 1 otherwise.")]
pub struct RepairArgs {
    /// Entries to resolve, as `member governance scan` names them (q-<n>, m-<member>-<app>).
    #[arg(long = "entry", value_name = "ID", required = true)]
    pub entries: Vec<String>,
    #[arg(long, value_enum)]
    pub resolution: Resolution,
    /// Who decides (recorded on every event and in the quarantine table).
    #[arg(long)]
    pub actor: String,
    /// Why (a ticket, a reason; recorded like the actor).
    #[arg(long)]
    pub note: String,
    /// Say what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Who resolves and why.
struct Audit<'a> {
    actor: &'a str,
    note: &'a str,
}

impl Audit<'_> {
    fn reason(&self) -> UnbindReason {
        UnbindReason::Governance {
            actor: self.actor.to_owned(),
            note: self.note.to_owned(),
        }
    }

    fn metadata(&self, entry: &str) -> HashMap<String, String> {
        let mut metadata = crate::tools::cause("governance-repair").metadata();
        metadata.extend([
            ("source".to_owned(), "governance".to_owned()),
            ("actor".to_owned(), self.actor.to_owned()),
            ("note".to_owned(), self.note.to_owned()),
            ("entry".to_owned(), entry.to_owned()),
        ]);
        metadata
    }
}

/// Runs the repair. Returns the process exit code.
pub async fn run(
    pool: PgPool,
    vault: Vault,
    args: RepairArgs,
    shutdown: &Shutdown,
) -> anyhow::Result<i32> {
    let actor = args.actor.trim();
    let note = args.note.trim();
    if actor.is_empty() || note.is_empty() || actor.len() > 200 || note.len() > 1000 {
        bail!("--actor (1-200 characters) and --note (1-1000 characters) are required");
    }
    let audit = Audit { actor, note };
    let service = CommandService::new(pool.clone(), vault);
    let mut failed = 0;
    for (done, name) in args.entries.iter().enumerate() {
        if shutdown.is_requested() {
            return Err(Interrupted::new(format!(
                "the repair stopped after {done} of {} entries; not resolved: {}",
                args.entries.len(),
                args.entries[done..].join(" ")
            ))
            .into());
        }
        let outcome =
            resolve_one(&pool, &service, name, args.resolution, &audit, args.dry_run).await;
        match outcome {
            Ok(done) => println!("{name}: {done}"),
            Err(e) => {
                failed += 1;
                println!("{name}: not resolved: {e:#}");
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Resolves one entry for the console (the same checks and audit as the CLI): what was done,
/// or why not.
pub async fn resolve(
    pool: &PgPool,
    vault: &Vault,
    name: &str,
    resolution: Resolution,
    actor: &str,
    note: &str,
) -> anyhow::Result<String> {
    let (actor, note) = (actor.trim(), note.trim());
    if actor.is_empty() || note.is_empty() || actor.len() > 200 || note.len() > 1000 {
        bail!("an actor (1-200 characters) and a note (1-1000 characters) are required");
    }
    let service = CommandService::new(pool.clone(), vault.clone());
    resolve_one(
        pool,
        &service,
        name,
        resolution,
        &Audit { actor, note },
        false,
    )
    .await
}

async fn resolve_one(
    pool: &PgPool,
    service: &CommandService,
    name: &str,
    resolution: Resolution,
    audit: &Audit<'_>,
    dry_run: bool,
) -> anyhow::Result<String> {
    if let Some(id) = name.strip_prefix("q-") {
        let id: i64 = id.parse().context("an entry id is q-<number>")?;
        let entry = quarantine::entry(pool, id)
            .await?
            .context("no such quarantine entry")?;
        if entry.status != "open" {
            bail!("the entry is already {}", entry.status);
        }
        return match resolution {
            Resolution::Dismiss => dismiss(pool, &entry, audit, dry_run).await,
            Resolution::Release => release(pool, service, &entry, audit, dry_run).await,
            Resolution::Unbind => bail!("quarantine entries are released or dismissed"),
        };
    }
    if let Some(rest) = name.strip_prefix("m-") {
        let (member, app) = rest
            .rsplit_once('-')
            .context("an event-store finding is m-<member id>-<app>")?;
        let member_id =
            Uuid::parse_str(member).context("an event-store finding names a member id")?;
        let app = WechatApp::parse(app).context("an event-store finding names an app")?;
        return match resolution {
            Resolution::Unbind => {
                unbind_openid(service, member_id, app, name, audit, dry_run).await
            }
            _ => bail!("event-store findings are resolved with --resolution unbind"),
        };
    }
    bail!("unknown entry (expected q-<n> or m-<member id>-<app>)")
}

async fn dismiss(
    pool: &PgPool,
    entry: &quarantine::Entry,
    audit: &Audit<'_>,
    dry_run: bool,
) -> anyhow::Result<String> {
    if dry_run {
        return Ok("would be dismissed".into());
    }
    if !quarantine::resolve(pool, entry.id, "dismissed", audit.actor, audit.note, None).await? {
        bail!("the entry was resolved concurrently");
    }
    Ok("dismissed".into())
}

async fn release(
    pool: &PgPool,
    service: &CommandService,
    entry: &quarantine::Entry,
    audit: &Audit<'_>,
    dry_run: bool,
) -> anyhow::Result<String> {
    let check = scan::recheck(pool, service.vault(), entry).await?;
    let member_id = check.member_id.context("the entry names no member")?;
    match check.state {
        State::Unresolvable | State::Abnormal => {
            bail!(
                "the record cannot be imported ({}); dismiss it",
                entry.reason
            )
        }
        State::Imported => {
            if !dry_run {
                quarantine::resolve(
                    pool,
                    entry.id,
                    "released",
                    audit.actor,
                    audit.note,
                    Some(member_id),
                )
                .await?;
            }
            return Ok(format!("already member {member_id}; entry closed"));
        }
        State::Importable | State::Conflicting => {}
    }
    let plan: Vec<String> = check
        .holders
        .iter()
        .map(|h| format!("unbind {} from member {}", h.kind, h.member_id))
        .collect();
    if dry_run {
        let mut steps = plan;
        steps.push(format!("register member {member_id}"));
        return Ok(format!("would {}", steps.join(", then ")));
    }
    let metadata = audit.metadata(&entry.name());
    let mut unbound = 0;
    for holder in &check.holders {
        let command = MemberCommand::UnbindIdentity {
            key: holder.key.clone(),
            reason: audit.reason(),
        };
        match service
            .execute_with_metadata(holder.member_id, command, None, metadata.clone())
            .await
        {
            Ok(done) => unbound += done.appended,
            // Already gone with its unionid (unbinding a unionid unbinds its openids).
            Err(CommandError::Rejected(MemberError::IdentityNotBound)) => {}
            Err(e) => return Err(e).context("unbinding an identity from its holder"),
        }
    }
    let command = MemberCommand::Register {
        identities: check.identities.clone(),
    };
    service
        .execute_with_metadata(member_id, command, None, metadata)
        .await
        .context("registering the released record")?;
    quarantine::resolve(
        pool,
        entry.id,
        "released",
        audit.actor,
        audit.note,
        Some(member_id),
    )
    .await?;
    tracing::info!(entry = %entry.name(), unbound, actor = audit.actor, "quarantine entry released");
    Ok(format!(
        "released: {unbound} identities unbound from {} member(s), member {member_id} registered",
        check
            .holders
            .iter()
            .map(|h| h.member_id)
            .collect::<std::collections::HashSet<_>>()
            .len()
    ))
}

async fn unbind_openid(
    service: &CommandService,
    member_id: Uuid,
    app: WechatApp,
    name: &str,
    audit: &Audit<'_>,
    dry_run: bool,
) -> anyhow::Result<String> {
    let member = service
        .load(member_id)
        .await
        .context("loading the member")?;
    let abnormal = scan::wechat_findings(member_id, &member)
        .into_iter()
        .any(|f| f.id == name);
    if !abnormal {
        bail!("the member has no abnormal {app} openid (any more)");
    }
    let key = member
        .identities()
        .iter()
        .find(|i| matches!(i, Identity::WechatOpenid { app: a, .. } if *a == app))
        .map(Identity::key)
        .context("the openid is gone")?;
    if dry_run {
        return Ok(format!(
            "would unbind the {app} openid of member {member_id}"
        ));
    }
    let command = MemberCommand::UnbindIdentity {
        key,
        reason: audit.reason(),
    };
    service
        .execute_with_metadata(member_id, command, None, audit.metadata(name))
        .await
        .context("unbinding the openid")?;
    Ok(format!("unbound the {app} openid of member {member_id}"))
}
