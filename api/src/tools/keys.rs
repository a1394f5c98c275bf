//! `member keys`: the keys of crypto-shredding (docs/decisions/0033).
//!
//! - `status`: how many data keys each master key wraps, and whether values are still in the
//!   clear;
//! - `rotate`: re-wraps every data key with the current master key (`encryption.master_key_id`),
//!   so an old master key can be retired; events are not touched;
//! - `migrate`: the one-time rewrite of a store written before encryption (identity owners,
//!   events, idempotency records). Resumable, safe beside a running system.

use anyhow::Context;
use clap::Subcommand;
use member_infra::config::Settings;
use member_infra::event_store::vault::{rewrite, Vault};

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Data keys per master key, and values still in the clear.
    Status,
    /// Re-wrap every data key with the current master key.
    #[command(after_help = "Example (a new master key k2 beside the old one):\n  \
        MEMBER__ENCRYPTION__MASTER_KEYS__K2=$(openssl rand -base64 32) \\\n  \
        MEMBER__ENCRYPTION__MASTER_KEY_ID=k2 member keys rotate")]
    Rotate,
    /// Seal every identity value still in the clear (a store written before encryption).
    Migrate,
}

/// Runs `member keys`. Exit code 0 on success.
pub async fn run(settings: &Settings, action: KeysAction) -> anyhow::Result<i32> {
    let pool = crate::app::event_store(settings).await?;
    let vault = crate::app::vault(settings);
    match action {
        KeysAction::Status => status(&pool).await,
        KeysAction::Rotate => rotate(&pool, &vault).await,
        KeysAction::Migrate => migrate(&pool, &vault).await,
    }
}

async fn status(pool: &sqlx::PgPool) -> anyhow::Result<i32> {
    for (key_id, count) in Vault::keys_by_master(pool)
        .await
        .context("counting data keys")?
    {
        println!("master key {key_id}: {count} data keys");
    }
    let plaintext: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events
         WHERE event_type IN ('IdentityBound', 'IdentityUnbound')
           AND (payload::jsonb -> event_type -> 'identity') ? 'value'
           AND (payload::jsonb -> event_type -> 'identity' ->> 'value') <> '[erased]'",
    )
    .fetch_one(pool)
    .await
    .context("counting values in the clear")?;
    println!("events with identity values in the clear: {plaintext}");
    Ok(0)
}

async fn rotate(pool: &sqlx::PgPool, vault: &Vault) -> anyhow::Result<i32> {
    let bar = crate::tools::progress::bar("rotate", None);
    let mut total = 0;
    loop {
        let done = vault
            .rotate_batch(pool, 1000)
            .await
            .context("re-wrapping data keys")?;
        if done == 0 {
            break;
        }
        total += done;
        bar.inc(done);
    }
    bar.finish_and_clear();
    println!(
        "re-wrapped {total} data keys with master key {}",
        vault.current_master_key_id()
    );
    Ok(0)
}

async fn migrate(pool: &sqlx::PgPool, vault: &Vault) -> anyhow::Result<i32> {
    let bar = crate::tools::progress::bar("migrate", None);
    let done = rewrite::all(pool, vault, |so_far| bar.set_position(so_far.members))
        .await
        .context("sealing values in the clear")?;
    bar.finish_and_clear();
    println!(
        "rekeyed {} identity owners, sealed {} events of {} members, keyed {} idempotency records",
        done.owners, done.events, done.members, done.idempotency_records
    );
    Ok(0)
}
