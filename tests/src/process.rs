//! The `member` binary as a child process, and the stack script, for tests that kill and restart
//! things.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `member` binary built next to this test (`cargo test --workspace` builds it).
pub fn member_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = dir.join("member");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p member-api` (make test does)",
        bin.display()
    );
    bin
}

/// The operational listeners of relay and projector processes on any free port, so that tests
/// running side by side never collide (a test that reads them sets its own ports after these).
pub const ANY_FREE_PORT: [(&str, &str); 2] = [
    ("MEMBER__TELEMETRY__RELAY_LISTEN", "127.0.0.1:0"),
    ("MEMBER__TELEMETRY__PROJECTOR_LISTEN", "127.0.0.1:0"),
];

/// Starts `member <args>` with the given environment overrides.
pub fn spawn_member(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(member_binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "warn");
    }
    for (k, v) in ANY_FREE_PORT {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn member")
}

/// Runs `scripts/stack.sh <args>` (stop-service, start-service, ...) and asserts it succeeded.
pub fn stack(args: &[&str]) {
    assert!(stack_ok(args), "stack.sh {args:?} failed");
}

/// Runs `scripts/stack.sh <args>`; whether it exited 0 (`check SERVICE` answers this way).
pub fn stack_ok(args: &[&str]) -> bool {
    let script = std::env::var("MEMBER_STACK_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh"));
    Command::new("bash")
        .arg(&script)
        .args(args)
        .status()
        .expect("run stack.sh")
        .success()
}

/// A signal a test sends to a child process.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (what an orchestrator sends).
    Terminate,
}

/// Sends `signal` to the process `pid` (with kill(1): the tests forbid unsafe code).
pub fn send_signal(pid: u32, signal: Signal) {
    let name = match signal {
        Signal::Interrupt => "INT",
        Signal::Terminate => "TERM",
    };
    let status = Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {name} {pid} failed: {status}");
}

/// Starts `member <args>` with the given environment, stdout and stderr captured (read them
/// with [`wait_exit`]).
pub fn spawn_member_captured(args: &[&str], env: &[(String, String)]) -> Child {
    let mut cmd = Command::new(member_binary());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .envs(ANY_FREE_PORT);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn member")
}

/// Waits for a child to exit (off the async threads) and returns what it printed; SIGKILLs it
/// and panics when it is still running after `timeout`.
pub async fn wait_exit(child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"));
    match tokio::time::timeout(timeout, waiting).await {
        Ok(output) => output.expect("the waiting task"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("member (pid {pid}) still running after {timeout:?}");
        }
    }
}
