//! The release `member` binary as a child process: started with the isolated configuration, its
//! log in the work directory, stopped with SIGTERM, and its peak resident memory (VmHWM).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

pub struct MemberProcess {
    child: Child,
    pub command_line: String,
}

impl MemberProcess {
    pub fn spawn(
        bin: &Path,
        args: &[&str],
        env: &[(String, String)],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).context("creating the member log")?;
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        let mut command_line = String::new();
        for (k, v) in env {
            cmd.env(k, v);
            command_line.push_str(&format!("{k}={v} "));
        }
        command_line.push_str(&format!("{} {}", bin.display(), args.join(" ")));
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} (cargo build --release)", bin.display()))?;
        Ok(Self {
            child,
            command_line,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `GET url` answers 200 (the process's health endpoint).
    pub async fn wait_healthy(&mut self, url: &str, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("member exited early ({status}); see its log");
            }
            if let Ok(r) = client.get(url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "{url} did not answer in time");
            // Short: the after-start lookup rows begin the moment the process answers.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the process to exit by itself (a one-shot subcommand).
    pub async fn wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak resident set size so far, in MiB (VmHWM from /proc).
    pub fn peak_rss_mib(&self) -> anyhow::Result<f64> {
        peak_rss_mib(self.pid())
    }

    /// SIGTERM, then up to 30 s for a graceful stop, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.wait();
        Ok(())
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/<pid>/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/<pid>/status")?;
    Ok(kib / 1024.0)
}
