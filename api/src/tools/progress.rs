//! Progress bars for long operator commands (rebuild, verify, seed, import): rate and ETA on a
//! terminal, nothing when stderr is not one (CI logs, pipes), so output stays readable.
//!
//! The same tools also run as jobs inside the query API (the console, api/src/console/jobs.rs).
//! There a job runs its tool inside [`observed`], and every bar the tool opens is hidden and
//! handed to the job's [`Observer`] instead of drawn: the console reads position and length from
//! the very bars the terminal would show, so the tools need no second progress API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

tokio::task_local! {
    static OBSERVER: Observer;
}

/// The bar a tool is advancing now, for a job in the server to show.
#[derive(Clone, Default)]
pub struct Observer(Arc<Mutex<Option<ProgressBar>>>);

/// A bar's state as a job reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// What the tool is doing (`fold`, `catch-up`, `verify`, ...).
    pub label: String,
    pub position: u64,
    pub total: Option<u64>,
}

impl Observer {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        // A bar is replaced whole; a panic while holding the lock leaves nothing half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bar opened last, if any.
    pub fn current(&self) -> Option<Step> {
        self.slot().as_ref().map(|bar| Step {
            label: bar.prefix().trim().to_owned(),
            position: bar.position(),
            total: bar.length(),
        })
    }
}

/// Runs `tool` with its bars reported to `observer` rather than drawn.
pub async fn observed<F: std::future::Future>(observer: Observer, tool: F) -> F::Output {
    OBSERVER.scope(observer, tool).await
}

/// A bar of `total` items (`None`: unknown total, a spinner with a count and rate), drawn on
/// stderr when it is a terminal, or reported to the job's observer inside [`observed`].
pub fn bar(label: &str, total: Option<u64>) -> ProgressBar {
    if let Ok(bar) = OBSERVER.try_with(|observer| {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        bar.set_prefix(label.to_owned());
        *observer.slot() = Some(bar.clone());
        bar
    }) {
        return bar;
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{prefix:>10} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}"
    } else {
        "{prefix:>10} [{elapsed_precise}] {spinner} {human_pos} {per_sec}"
    };
    bar.set_style(ProgressStyle::with_template(template).expect("a valid progress template"));
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bars_inside_observed_are_reported_to_the_observer() {
        let observer = Observer::default();
        assert_eq!(observer.current(), None);
        observed(observer.clone(), async {
            let bar = bar("fold", Some(10));
            bar.inc(4);
        })
        .await;
        assert_eq!(
            observer.current(),
            Some(Step {
                label: "fold".into(),
                position: 4,
                total: Some(10)
            })
        );
    }
}
