//! The `member` binary as a child process, and the stack script, for tests that kill and restart
//! things.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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
