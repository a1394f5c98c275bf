//! Running the member tool (`member rebuild`, `member verify`, ...) as an operator would, against
//! the isolated stack of a test, and writing members while it runs.

use std::process::Command;

use member_domain::{Identity, IdentityKey, MemberCommand, UnbindReason};
use member_infra::config::Settings;
use member_infra::event_store::commands::CommandService;
use uuid::Uuid;

/// The environment that points a `member` process at the test's stack.
pub fn member_env(settings: &Settings) -> Vec<(String, String)> {
    [
        (
            "MEMBER__POSTGRES__URL",
            settings.postgres.url.expose_secret().to_owned(),
        ),
        ("MEMBER__KAFKA__TOPIC", settings.kafka.topic.clone()),
        (
            "MEMBER__MYSQL__DATABASES",
            settings.mysql.databases.join(","),
        ),
        (
            "MEMBER__MYSQL__LOGICAL_SHARDS",
            settings.mysql.logical_shards.to_string(),
        ),
        ("MEMBER__DATA_DIR", settings.data_dir.display().to_string()),
        (
            "MEMBER__REDIS__A__URL",
            settings.redis.a.url.expose_secret().to_owned(),
        ),
        (
            "MEMBER__REDIS__B__URL",
            settings.redis.b.url.expose_secret().to_owned(),
        ),
        (
            "MEMBER__SEARCH__REFRESH_MS",
            settings.search.refresh_ms.to_string(),
        ),
        (
            "MEMBER__SEARCH__ENGINE",
            settings.search.engine.as_str().to_owned(),
        ),
        (
            "MEMBER__SEARCH__ELASTICSEARCH__INDEX_PREFIX",
            settings.search.elasticsearch.index_prefix.clone(),
        ),
        (
            "MEMBER__SEARCH__ELASTICSEARCH__SHARDS",
            settings.search.elasticsearch.shards.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The outcome of a `member` command.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is json ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `member <args>` against the test's stack and waits for it (off the async threads).
pub async fn run_member(settings: &Settings, args: &[&str]) -> Ran {
    let mut cmd = Command::new(crate::process::member_binary());
    cmd.args(args).env("RUST_LOG", "warn");
    for (k, v) in member_env(settings) {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run member"))
        .await
        .unwrap();
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Registers a member with an account and a card (unique to `tag` and `i`); returns its id.
pub async fn register(commands: &CommandService, tag: &str, i: u32) -> Uuid {
    let id = Uuid::now_v7();
    let account = Identity::parse("tongcheng_account", &format!("{tag}-{i}"), None, None).unwrap();
    commands
        .execute(
            id,
            MemberCommand::Register {
                identities: vec![account],
            },
            None,
        )
        .await
        .unwrap();
    commands
        .execute(id, MemberCommand::BindIdentity { identity: card(i) }, None)
        .await
        .unwrap();
    id
}

/// A fresh card number (random prefix, then `i`).
pub fn card(i: u32) -> Identity {
    let prefix = crate::sink_contract::digits(6);
    Identity::parse("elong_card", &format!("{prefix}{i:06}"), None, None).unwrap()
}

/// Unbinds an identity at the member's request.
pub async fn unbind(commands: &CommandService, member: Uuid, key: IdentityKey) {
    commands
        .execute(
            member,
            MemberCommand::UnbindIdentity {
                key,
                reason: UnbindReason::MemberRequest,
            },
            None,
        )
        .await
        .unwrap();
}
