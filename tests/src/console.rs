//! The operations console's test support: the browser test's dependencies (node, Debian
//! chromium, the npm package playwright-core installed by scripts/console-test-deps.sh) and a
//! session opened through the sign-in form for HTTP-level tests.

use std::path::PathBuf;

/// Where the browser test lives (tests/console/, with its package.json).
pub fn browser_test_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console")
}

/// The chromium the browser test drives (`CHROMIUM`, default the Debian package's).
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics with what to run when a dependency of the browser test is missing: a missing
/// dependency is a failure, never a skip (`make test` installs them).
pub fn require_browser_dependencies() {
    let hint =
        "run scripts/console-test-deps.sh (make test does) to install chromium and playwright-core";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.map(|o| o.status.success()).unwrap_or(false),
        "node is not installed: {hint}"
    );
    assert!(
        chromium().exists(),
        "{} is missing: {hint}",
        chromium().display()
    );
    assert!(
        browser_test_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/console/node_modules/playwright-core is missing: {hint}"
    );
}

/// Where the browser test writes its screenshots: docs/console/ when `CONSOLE_SCREENSHOTS=docs`
/// (to refresh the documentation), otherwise under target/, so `make test` leaves the tree clean.
pub fn screenshot_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf();
    match std::env::var("CONSOLE_SCREENSHOTS").as_deref() {
        Ok("docs") => root.join("docs/console"),
        _ => root.join("target/console-screenshots"),
    }
}

/// The value of the session cookie a sign-in response set, if any.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("member_console="))
        .map(str::to_owned)
}
