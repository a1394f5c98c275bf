//! The pipeline view: the event store's head, the relay's checkpoint and lag, each projection's
//! records and seconds behind, its consumer group (members, partitions), each backend's health
//! and breaker, and two charts over the last minutes: each projection's lag, and which backends
//! served each read class. The page refreshes its fragment by itself (console.js).
//!
//! Lag and group membership come from the broker, which costs a few round trips per target, so
//! a sampler asks every [`SAMPLE_EVERY`] while an operator is signed in, and never otherwise.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use member_infra::kafka::lag::{ConsumerGroupLag, GroupDetail};
use member_infra::relay::{Checkpoint, EventStoreReader};
use member_projections::Target;
use member_read_policy::routing::ReadClass;

use super::errors::ConsoleError;
use super::html::{self, escape};
use super::session::{MaybeOperator, Operator};
use super::Console;
use crate::query_api::read_path::ReadPath;
use crate::query_api::AppState;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: five minutes.
const KEEP: usize = 150;

/// Where a read can be served from: the six backends, and the process's own caches.
pub const SOURCES: [&str; 8] = [
    "redis-a",
    "redis-b",
    "search-primary",
    "search-backup",
    "search-marketing",
    "mysql",
    "near-cache",
    "last-served",
];

pub struct Sample {
    pub at: DateTime<Utc>,
    /// Records behind per target, in [`Target::ALL`] order (`None`: unknown).
    pub lag: [Option<u64>; 6],
    /// Reads served since the previous sample, per class and source ([`SOURCES`]).
    pub served: [[u64; 8]; 2],
}

#[derive(Default)]
pub struct Samples {
    history: Mutex<VecDeque<Sample>>,
    groups: Mutex<BTreeMap<Target, Result<GroupDetail, String>>>,
    /// Reads served since the process started, per class and source.
    served: [[AtomicU64; 8]; 2],
    served_before: Mutex<[[u64; 8]; 2]>,
}

fn class_index(class: ReadClass) -> usize {
    match class {
        ReadClass::Order => 0,
        ReadClass::Marketing => 1,
    }
}

impl Samples {
    /// Counts a read served to `class` from `source` (called by the query path: two atomics).
    pub fn served(&self, class: ReadClass, source: &str) {
        if let Some(i) = SOURCES.iter().position(|s| *s == source) {
            self.served[class_index(class)][i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn push(&self, lag: [Option<u64>; 6]) {
        let now: [[u64; 8]; 2] = std::array::from_fn(|c| {
            std::array::from_fn(|s| self.served[c][s].load(Ordering::Relaxed))
        });
        let served = {
            let mut before = self.served_before.lock().unwrap_or_else(|p| p.into_inner());
            let delta = std::array::from_fn(|c| {
                std::array::from_fn(|s| now[c][s].saturating_sub(before[c][s]))
            });
            *before = now;
            delta
        };
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push_back(Sample {
            at: Utc::now(),
            lag,
            served,
        });
        while history.len() > KEEP {
            history.pop_front();
        }
    }

    /// Seconds since each target's lag became non-zero without going back to zero (0 when the
    /// last sample shows no lag; `None` when unknown). An estimate at the sampling rate: the
    /// broker does not say how old the oldest unconsumed record is without reading it.
    fn seconds_behind(&self) -> [Option<f64>; 6] {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = history.back() else {
            return [None; 6];
        };
        std::array::from_fn(|t| match last.lag[t] {
            None => None,
            Some(0) => Some(0.0),
            Some(_) => {
                let since = history
                    .iter()
                    .rev()
                    .take_while(|s| s.lag[t].is_some_and(|n| n > 0))
                    .last()
                    .map(|s| s.at)
                    .unwrap_or(last.at);
                Some(
                    (last.at - since).num_milliseconds() as f64 / 1000.0
                        + SAMPLE_EVERY.as_secs_f64(),
                )
            }
        })
    }
}

/// Samples lag (and group membership every third time) while anyone is signed in.
pub async fn sample_forever(console: Weak<Console>, reads: Weak<ReadPath>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let (Some(console), Some(reads)) = (console.upgrade(), reads.upgrade()) else {
            return;
        };
        if !console.sessions.any() {
            continue;
        }
        let mut lag = [None; 6];
        if let Some(status) = &reads.registry().status {
            match status.projection_lag().await {
                Ok(lags) => {
                    for l in lags {
                        if let Some(i) = Target::ALL.iter().position(|t| t.as_str() == l.target) {
                            lag[i] = l.records_behind;
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "console: projection lag unavailable"),
            }
        }
        console.samples.push(lag);
        if n % 3 == 0 {
            let settings = console.settings.clone();
            let groups = tokio::task::spawn_blocking(move || {
                Target::ALL
                    .into_iter()
                    .map(|t| {
                        let detail =
                            ConsumerGroupLag::group_detail(&settings, t).map_err(|e| e.to_string());
                        (t, detail)
                    })
                    .collect::<BTreeMap<_, _>>()
            })
            .await;
            if let Ok(groups) = groups {
                *console
                    .samples
                    .groups
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = groups;
            }
        }
        n += 1;
    }
}

/// `GET /console`: the sign-in form, or the pipeline view.
pub async fn page(
    State(state): State<AppState>,
    MaybeOperator(operator): MaybeOperator,
) -> Response {
    let Some(operator) = operator else {
        return html::sign_in_page(None).into_response();
    };
    let fragment = render(&state).await;
    let body = format!(
        "<h2>Pipeline</h2>\n<div id=\"pipeline\" data-refresh=\"/console/pipeline\" \
         data-every=\"2000\">{fragment}</div>"
    );
    html::page(&operator, "pipeline", "Pipeline", &body).into_response()
}

/// `GET /console/pipeline`: the view's content, for the page to refresh.
pub async fn fragment(
    State(state): State<AppState>,
    _: Operator,
) -> Result<Html<String>, ConsoleError> {
    Ok(Html(render(&state).await))
}

/// The event store's head and the relay's position, or why they are unknown.
async fn event_store_section(console: &Console) -> String {
    const PROBE: Duration = Duration::from_secs(3);
    let pool = &console.pool;
    let topic = &console.settings.kafka.topic;
    let probe = async {
        let head: (Option<i64>, i64) = sqlx::query_as("SELECT max(position), count(*) FROM events")
            .fetch_one(pool)
            .await?;
        let checkpoint = Checkpoint::load(pool, topic).await?;
        let behind = EventStoreReader::new(pool.clone(), console.vault.clone())
            .events_after(checkpoint)
            .await?;
        Ok::<_, sqlx::Error>((head, checkpoint, behind))
    };
    match tokio::time::timeout(PROBE, probe).await {
        Ok(Ok(((head, events), checkpoint, behind))) => format!(
            "<table class=\"kv\" id=\"event-store\">\
             <tr><th>Event store head (position)</th><td id=\"head\">{}</td></tr>\
             <tr><th>Events stored</th><td>{events}</td></tr>\
             <tr><th>Relay checkpoint (position)</th><td id=\"relay-checkpoint\">{}</td></tr>\
             <tr><th>Relay lag (events not yet on {})</th><td id=\"relay-lag\" class=\"{}\">{behind}</td></tr>\
             </table>",
            head.unwrap_or(0),
            checkpoint.position,
            escape(topic),
            if behind > 0 { "warn" } else { "ok" },
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "console: event store unavailable");
            "<p class=\"down\" id=\"event-store\">The event store does not answer.</p>".into()
        }
        Err(_) => "<p class=\"down\" id=\"event-store\">The event store did not answer in time.</p>".into(),
    }
}

async fn render(state: &AppState) -> String {
    let console = &state.console;
    let registry = state.registry();
    let mut out = event_store_section(console).await;
    let behind_s = console.samples.seconds_behind();
    let lag = console
        .samples
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .back()
        .map(|s| s.lag)
        .unwrap_or([None; 6]);
    let groups = console
        .samples
        .groups
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    out.push_str(
        "<table id=\"projections\"><thead><tr><th>Projection</th><th>Records behind</th>\
         <th>Seconds behind</th><th>Health</th><th>Breaker</th><th>Consumer group</th>\
         <th>Partitions (committed / end)</th></tr></thead><tbody>",
    );
    for (i, target) in Target::ALL.into_iter().enumerate() {
        let backend = registry.backend(target);
        let health = if backend.faulted() {
            ("down", "faulted")
        } else if backend.recovering() {
            ("warn", "recovering")
        } else if backend.available() {
            ("ok", "available")
        } else {
            ("down", "unavailable")
        };
        let (members, partitions) = match groups.get(&target) {
            None => (
                "<span class=\"muted\">sampling…</span>".to_owned(),
                String::new(),
            ),
            Some(Err(e)) => (
                format!("<span class=\"down\">{}</span>", escape(e)),
                String::new(),
            ),
            Some(Ok(g)) => {
                let members = if g.members.is_empty() {
                    format!("{} · no members", escape(&g.state))
                } else {
                    g.members
                        .iter()
                        .map(|m| {
                            format!(
                                "{} @ {} → {:?}",
                                escape(&m.client_id),
                                escape(&m.host),
                                m.partitions
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("<br>")
                };
                let partitions = g
                    .partitions
                    .iter()
                    .map(|p| {
                        format!(
                            "p{}: {} / {}",
                            p.partition,
                            p.committed.map(|c| c.to_string()).unwrap_or("-".into()),
                            p.high_watermark
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>");
                (members, partitions)
            }
        };
        out.push_str(&format!(
            "<tr data-target=\"{t}\"><td>{t}</td><td class=\"num {lag_class}\">{lag}</td>\
             <td class=\"num\">{secs}</td><td class=\"{hc}\">{h}</td><td>{breaker}</td>\
             <td class=\"small\">{members}</td><td class=\"small\">{partitions}</td></tr>",
            t = target.as_str(),
            lag_class = match lag[i] {
                Some(0) => "ok",
                Some(_) => "warn",
                None => "muted",
            },
            lag = lag[i].map(|n| n.to_string()).unwrap_or("…".into()),
            secs = behind_s[i].map(|s| format!("{s:.0}")).unwrap_or("…".into()),
            hc = health.0,
            h = health.1,
            breaker = backend.breaker_state().as_str(),
        ));
    }
    out.push_str("</tbody></table>");
    out.push_str(&charts(console));
    out
}

/// Colours of the series (one per target, then the caches).
const COLOURS: [&str; 8] = [
    "#d62728", "#ff7f0e", "#1f77b4", "#17becf", "#9467bd", "#2ca02c", "#7f7f7f", "#bcbd22",
];

fn charts(console: &Console) -> String {
    let history = console
        .samples
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut out = String::from("<div class=\"charts\">");
    let lag_series: Vec<(&str, Vec<f64>)> = Target::ALL
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.as_str(),
                history
                    .iter()
                    .map(|s| s.lag[i].unwrap_or(0) as f64)
                    .collect(),
            )
        })
        .collect();
    out.push_str(&chart(
        "lag-chart",
        "Records behind, per projection",
        &lag_series,
    ));
    for class in ReadClass::ALL {
        let c = class_index(class);
        let series: Vec<(&str, Vec<f64>)> = SOURCES
            .iter()
            .enumerate()
            .map(|(s, name)| {
                (
                    *name,
                    history
                        .iter()
                        .map(|x| x.served[c][s] as f64 / SAMPLE_EVERY.as_secs_f64())
                        .collect(),
                )
            })
            .collect();
        out.push_str(&chart(
            &format!("served-{}", class.as_str()),
            &format!("Reads/s served to class {}, per backend", class.as_str()),
            &series,
        ));
    }
    out.push_str("</div>");
    out
}

/// A line chart as inline SVG (no script, no external library): one polyline per series, the
/// newest sample on the right.
fn chart(id: &str, title: &str, series: &[(&str, Vec<f64>)]) -> String {
    const W: f64 = 560.0;
    const H: f64 = 150.0;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max)
        .max(1.0);
    let step = W / (KEEP as f64 - 1.0);
    let mut svg = format!(
        "<figure class=\"chart\" id=\"{id}\"><figcaption>{} <span class=\"muted\">(max {:.0}, \
         last {} s)</span></figcaption><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" \
         role=\"img\" aria-label=\"{}\"><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" \
         fill=\"#fafafa\" stroke=\"#ccc\"/>",
        escape(title),
        max,
        KEEP as u64 * SAMPLE_EVERY.as_secs(),
        escape(title)
    );
    let mut legend = String::from("<ul class=\"legend\">");
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        if values.iter().any(|v| *v > 0.0) || i < 6 {
            legend.push_str(&format!(
                "<li><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" \
                 fill=\"{colour}\"/></svg> {} {}</li>",
                escape(name),
                values.last().map(|v| format!("{v:.0}")).unwrap_or_default()
            ));
        }
        if values.is_empty() {
            continue;
        }
        let offset = (KEEP - values.len()) as f64 * step;
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(j, v)| {
                format!(
                    "{:.1},{:.1}",
                    offset + j as f64 * step,
                    H - 4.0 - (v / max) * (H - 8.0)
                )
            })
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        ));
    }
    legend.push_str("</ul>");
    svg.push_str("</svg>");
    svg.push_str(&legend);
    svg.push_str("</figure>");
    svg
}
