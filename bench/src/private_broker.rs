//! An Apache Kafka cluster of the benchmark's or the drill's own (scripts/kafka-cluster.sh: the
//! jars scripts/stack.sh installs, its own directory and ports), so that a run can restart or kill
//! brokers without taking the shared one away from other clients, and without inheriting its
//! state.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::private_redis::free_port;

pub struct PrivateBroker {
    script: PathBuf,
    dir: PathBuf,
    nodes: usize,
    brokers: String,
    up: bool,
}

impl PrivateBroker {
    /// Starts `nodes` combined broker/controller nodes (three or more: replication factor 3 and
    /// `min.insync.replicas` 2 for the cluster's internal topics), each on its own rack name
    /// from `racks` when given. Waits until every node answers.
    pub fn start(script: &Path, dir: &Path, nodes: usize, racks: &[&str]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).context("creating the broker directory")?;
        // Two ports per node (listener and controller), consecutive from a free one.
        let base = (0..50)
            .map(|_| free_port())
            .find(|p| {
                p.as_ref().is_ok_and(|p| {
                    (1..2 * nodes as u16)
                        .all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
                })
            })
            .context("no free port range for the private brokers")??;
        let mut args = vec![
            "up".to_owned(),
            dir.display().to_string(),
            nodes.to_string(),
            base.to_string(),
        ];
        args.extend(racks.iter().map(|r| r.to_string()));
        let mut broker = Self {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            nodes,
            brokers: String::new(),
            up: true,
        };
        broker.script(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        broker.brokers = broker.script(&["brokers", &dir.display().to_string()])?;
        Ok(broker)
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<String> {
        Self::run_script(&self.script, args)
    }

    /// The bootstrap list, `127.0.0.1:p1,127.0.0.1:p2,...`.
    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }

    pub fn command_line(&self) -> String {
        format!(
            "bash {} up {} {} <free port>",
            self.script.display(),
            self.dir.display(),
            self.nodes
        )
    }

    /// Stops node `i` (1-based): SIGTERM and a controlled shutdown, or SIGKILL with `kill`.
    pub async fn stop_node(&self, i: usize, kill: bool) -> anyhow::Result<()> {
        let dir = self.dir.display().to_string();
        let i = i.to_string();
        let mut args = vec!["stop-node", &dir, &i];
        if kill {
            args.push("--kill");
        }
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let script = self.script.clone();
        tokio::task::spawn_blocking(move || {
            Self::run_script(
                &script,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await?
        .map(drop)
    }

    /// Starts node `i` again on its storage and waits until it answers.
    pub async fn start_node(&self, i: usize) -> anyhow::Result<()> {
        let args = [
            "start-node".to_owned(),
            self.dir.display().to_string(),
            i.to_string(),
        ];
        let script = self.script.clone();
        tokio::task::spawn_blocking(move || {
            Self::run_script(
                &script,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await?
        .map(drop)
    }

    fn run_script(script: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "{} {}: {}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Stops node 1 and starts it again on the same storage (a one-node cluster's restart).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop_node(1, false).await?;
        self.start_node(1).await
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if self.up {
            self.up = false;
            let _ = self.script(&["down", &self.dir.display().to_string()]);
        }
    }
}
