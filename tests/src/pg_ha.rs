//! A private highly available event store for tests that kill, cut and promote its nodes
//! (scripts/pg-ha.sh, ADR 0037): two Patroni-managed PostgreSQL nodes (centers A and B), three
//! etcd members and an HAProxy endpoint per center, each center in a network namespace of its
//! own. The shared PostgreSQL is not the tests' to kill. Stopped (`down`) on drop.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// A center of the private cluster: `a`, `b` or the witness `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Center {
    A,
    B,
    Witness,
}

impl Center {
    fn arg(self) -> &'static str {
        match self {
            Center::A => "a",
            Center::B => "b",
            Center::Witness => "w",
        }
    }
}

pub struct PrivatePgHa {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-ha.sh")
}

/// The ports inside each center's namespace (its own port space): the same for every cluster.
const BASE_PORT: &str = "25400";

impl PrivatePgHa {
    /// Starts the cluster (installing what is missing) and waits until A leads with B as its
    /// synchronous standby and both endpoints answer.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = Self { dir };
        let path = cluster.dir.path().to_str().expect("utf-8 path").to_owned();
        cluster.run(&["up", &path, BASE_PORT]).await;
        cluster
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    async fn output(&self, args: &[&str]) -> Output {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new("bash")
                .arg(script())
                .args(&args)
                .output()
                .expect("run scripts/pg-ha.sh")
        })
        .await
        .expect("pg-ha.sh task")
    }

    /// Runs `pg-ha.sh <command> DIR <rest>`, asserting success; its standard output.
    async fn run(&self, args: &[&str]) -> String {
        let out = self.output(args).await;
        assert!(
            out.status.success(),
            "pg-ha.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn on(&self, command: &str, rest: &[&str]) -> String {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let mut args = vec![command, dir.as_str()];
        args.extend_from_slice(rest);
        self.run(&args).await
    }

    /// The URL of `center`'s leader-following endpoint (HAProxy), database `database`.
    pub async fn url(&self, center: Center, database: &str) -> String {
        self.on("url", &[center.arg(), database]).await
    }

    /// SIGKILL the center's Patroni and PostgreSQL (its etcd and HAProxy keep running).
    pub async fn kill_node(&self, center: Center) {
        self.on("kill-node", &[center.arg()]).await;
    }

    /// Takes the center's link down; its processes keep running.
    pub async fn cut(&self, center: Center) {
        self.on("cut", &[center.arg()]).await;
    }

    pub async fn heal(&self, center: Center) {
        self.on("heal", &[center.arg()]).await;
    }

    /// The center whose node is the primary, as seen from the host (`None` while nobody is).
    pub async fn leader(&self) -> Option<Center> {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let out = self.output(&["leader", &dir]).await;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "a" => Some(Center::A),
            "b" => Some(Center::B),
            _ => None,
        }
    }

    /// The node's own view of its role (`master`/`primary`, `replica`, ...), asked inside its
    /// center (works while the center is cut off).
    pub async fn role(&self, center: Center) -> String {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let out = self.output(&["role", &dir, center.arg()]).await;
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs `sql` as `member` straight on the center's node (no endpoint), from inside the
    /// center, bounded by `timeout`: `Ok(output)`, or `Err(what happened)` when it failed or
    /// did not answer in time.
    pub async fn sql_on_node(
        &self,
        center: Center,
        sql: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let secs = timeout.as_secs().max(1).to_string();
        let args: Vec<String> = [
            "timeout",
            "-s",
            "KILL",
            &secs,
            "bash",
            script().to_str().unwrap(),
            "sql",
            &dir,
            center.arg(),
            sql,
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(&args[0])
                .args(&args[1..])
                .output()
                .expect("run pg-ha.sh sql")
        })
        .await
        .expect("pg-ha.sh task");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else if out.status.code().is_none() || out.status.code() == Some(137) {
            Err("no answer in time".to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// A fresh, migrated event-store database on the cluster, through `center`'s endpoint: a
    /// pool to it and its URL.
    pub async fn fresh_event_store(&self, center: Center) -> (PgPool, String) {
        let name = crate::unique("member_test");
        let admin = self.url(center, "member").await;
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("the private cluster's endpoint answers");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let url = self.url(center, &name).await;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .expect("connect to the test database");
        member_infra::event_store::migrate(&pool)
            .await
            .expect("migrations run");
        (pool, url)
    }
}

impl Drop for PrivatePgHa {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test keeps the cluster's logs (Patroni, PostgreSQL, etcd, HAProxy): the
            // cluster's directory itself is removed below.
            let kept = std::env::temp_dir().join(format!(
                "pg-ha-failed-{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            ));
            let copied = Command::new("bash")
                .arg("-c")
                .arg(r#"mkdir -p "$2" && cd "$1" && find . -name '*.log' -exec cp --parents {} "$2" \;"#)
                .arg("keep-logs")
                .arg(self.dir.path())
                .arg(&kept)
                .status();
            if copied.is_ok_and(|s| s.success()) {
                eprintln!("pg-ha: the cluster's logs are kept in {}", kept.display());
            }
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}
