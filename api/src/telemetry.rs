//! Logs and metrics.
//!
//! Logs are structured `tracing` events with lowercase messages. Personal data (mobiles,
//! unionids, any identity value) is never logged at info level or above.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the log subscriber (RUST_LOG, default `info`). Safe to call more than once.
pub fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        // Logs go to stderr: stdout is for command output (`member status --json`).
        .with_writer(std::io::stderr)
        .try_init();
}

/// The process-wide Prometheus recorder; installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests build several apps in one
            // process); ours then only renders what it saw, which is fine for tests.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
