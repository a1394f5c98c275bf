//! A tansu broker of the drill's own (the binary scripts/stack.sh installs) on a free port with
//! its own SQLite storage in the work directory, so that the drill can restart a broker without
//! taking the shared one away from other clients, and without inheriting its state.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::private_redis::free_port;

pub struct PrivateBroker {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).context("creating the broker directory")?;
        let mut broker = Self {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            port: free_port()?,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// The broker's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn command_line(&self) -> String {
        format!(
            "(cd {}; {} {})",
            self.dir.display(),
            self.bin.display(),
            self.args().join(" ")
        )
    }

    fn args(&self) -> Vec<String> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        vec![
            "broker".into(),
            "--cluster-id".into(),
            "member-drill".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--storage-engine".into(),
            "sqlite://tansu.db".into(),
        ]
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))?;
        let child = Command::new(&self.bin)
            .args(self.args())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (make stack-up installs it)",
                    self.bin.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the private broker did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGTERM, wait (SIGKILL after 10 s), start again on the same port and storage.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.wait();
        }
        self.spawn()
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
