//! `member erase --member-id ID`: the operator's erasure of a member's personal data, the same
//! command as `POST /v1/members/{id}/erasure` (docs/operations/erasure.md). Idempotent: erasing
//! an erased member prints the first receipt.

use anyhow::Context;
use chrono::SecondsFormat;
use member_infra::config::Settings;
use member_infra::event_store::commands::{CommandError, CommandService};
use member_infra::event_store::erasure;
use uuid::Uuid;

/// Exit code when the member does not exist.
pub const NOT_FOUND: i32 = 3;

/// Erases the member and prints the receipt as JSON (`{"member_id", "accepted_at"}`). Exit code
/// 0 when accepted (now or before), [`NOT_FOUND`] for an unknown member.
pub async fn run(settings: &Settings, member_id: Uuid) -> anyhow::Result<i32> {
    let pool = crate::app::event_store(settings).await?;
    let commands = CommandService::new(pool.clone(), crate::app::vault(settings));
    let cause = crate::tools::cause("erase");
    match erasure::erase(&commands, &pool, &cause, member_id).await {
        Ok(receipt) => {
            tracing::info!(
                target: "audit",
                caller = %cause.caller,
                member_id = %member_id,
                "member erasure accepted"
            );
            println!(
                "{}",
                serde_json::json!({
                    "member_id": receipt.member_id,
                    "accepted_at": receipt.accepted_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                })
            );
            Ok(0)
        }
        Err(CommandError::Rejected(member_domain::MemberError::MemberNotFound)) => {
            eprintln!("member {member_id} not found: nothing to erase");
            Ok(NOT_FOUND)
        }
        Err(e) => Err(e).context("erasing the member"),
    }
}
