//! Progress bars for long operator commands (rebuild, verify, seed, import): rate and ETA on a
//! terminal, nothing when stderr is not one (CI logs, pipes), so output stays readable.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` items (`None`: unknown total, a spinner with a count and rate), drawn on
/// stderr when it is a terminal.
pub fn bar(label: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
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
