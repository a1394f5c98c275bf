//! Jobs: `rebuild` or `verify [--repair]` of one target, started from the console and run by
//! the server as a task of its own, so closing the page does not stop it. The tools are the
//! CLI's own (`tools::rebuild`, `tools::verify`); their progress bars are observed
//! ([`crate::tools::progress::observed`]). At most one job runs per target (two rebuilds of one
//! store would race for its table set or generation). Jobs are kept in memory, newest first, so
//! past jobs stay listed until the process restarts. When the server stops, running jobs get the
//! shutdown signal a tool gets from SIGTERM and remove their partial build.
//!
//! Each job runs on a thread of its own with a current-thread runtime: the tools were written
//! for `member`'s main task and hold non-`Send` values across awaits (a thread RNG, a fold's
//! `RefCell`), so they cannot be spawned on the server's work-stealing runtime; a thread also
//! keeps a long fold from taking the query path's workers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{DateTime, SecondsFormat, Utc};
use member_projections::Target;
use serde::Deserialize;
use tokio::sync::watch;

use super::csrf;
use super::errors::ConsoleError;
use super::html::{self, escape};
use super::session::Operator;
use super::Console;
use crate::query_api::AppState;
use crate::shutdown::Shutdown;
use crate::tools::progress::{observed, Observer};
use crate::tools::{rebuild, verify};

/// Jobs kept in the list (the oldest finished ones are dropped beyond).
const KEEP: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rebuild,
    Verify { repair: bool },
}

impl Kind {
    fn parse(s: &str) -> Result<Self, ConsoleError> {
        match s {
            "rebuild" => Ok(Kind::Rebuild),
            "verify" => Ok(Kind::Verify { repair: false }),
            "verify-repair" => Ok(Kind::Verify { repair: true }),
            _ => Err(ConsoleError::InvalidRequest(
                "job must be rebuild, verify or verify-repair".into(),
            )),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Rebuild => "rebuild",
            Kind::Verify { repair: false } => "verify",
            Kind::Verify { repair: true } => "verify --repair",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Succeeded(String),
    Failed(String),
}

pub struct Job {
    pub id: u64,
    pub kind: Kind,
    pub target: Target,
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    observer: Observer,
    outcome: Mutex<Option<(Outcome, DateTime<Utc>)>>,
}

impl Job {
    fn outcome(&self) -> Option<(Outcome, DateTime<Utc>)> {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn running(&self) -> bool {
        self.outcome().is_none()
    }
}

pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    next_id: AtomicU64,
    stop: watch::Sender<bool>,
    /// Woken whenever a job ends.
    ended: Arc<tokio::sync::Notify>,
}

impl Default for Jobs {
    fn default() -> Self {
        Self {
            list: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            stop: watch::channel(false).0,
            ended: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

impl Jobs {
    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Job>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Vec<Arc<Job>> {
        self.list().clone()
    }

    /// Starts a job, unless one runs for the target already.
    pub fn start(
        &self,
        console: &Arc<Console>,
        kind: Kind,
        target: Target,
        started_by: &str,
    ) -> Result<Arc<Job>, ConsoleError> {
        let job = {
            let mut list = self.list();
            if let Some(running) = list.iter().find(|j| j.target == target && j.running()) {
                return Err(ConsoleError::Conflict(format!(
                    "job {} ({} of {target}) is running; a target takes one job at a time",
                    running.id,
                    running.kind.label()
                )));
            }
            let job = Arc::new(Job {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                kind,
                target,
                started_by: started_by.to_owned(),
                started_at: Utc::now(),
                observer: Observer::default(),
                outcome: Mutex::new(None),
            });
            list.insert(0, job.clone());
            while list.len() > KEEP {
                match list.iter().rposition(|j| !j.running()) {
                    Some(i) => {
                        list.remove(i);
                    }
                    None => break,
                }
            }
            job
        };
        tracing::info!(
            target: "audit",
            job = job.id,
            kind = kind.label(),
            store = target.as_str(),
            caller = started_by,
            "console job started"
        );
        let console = console.clone();
        let running = job.clone();
        let mut stop = self.stop.subscribe();
        let ended = self.ended.clone();
        let thread = std::thread::Builder::new()
            .name(format!("console-job-{}", job.id))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            // Created inside the job's runtime: it spawns its signal task there.
                            let shutdown = Shutdown::on(async move {
                                let _ = stop.wait_for(|s| *s).await;
                            });
                            observed(running.observer.clone(), run(&console, &running, &shutdown))
                                .await
                        })
                    });
                finish(&running, result);
                ended.notify_waiters();
            });
        if let Err(e) = thread {
            finish(
                &job,
                Err(anyhow::anyhow!("could not start the job's thread: {e}")),
            );
        }
        Ok(job)
    }

    /// Asks running jobs to stop (as SIGTERM asks a tool) and waits for them, at most `grace`.
    pub async fn stop_all(&self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let ended = self.ended.notified();
            if !self.list().iter().any(|j| j.running()) {
                return;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                tracing::warn!("console jobs still running at shutdown");
                return;
            }
        }
    }
}

fn finish(job: &Job, result: anyhow::Result<String>) {
    let outcome = match result {
        Ok(summary) => Outcome::Succeeded(summary),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    };
    tracing::info!(
        target: "audit",
        job = job.id,
        succeeded = matches!(outcome, Outcome::Succeeded(_)),
        "console job finished"
    );
    *job.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some((outcome, Utc::now()));
}

async fn run(console: &Console, job: &Job, shutdown: &Shutdown) -> anyhow::Result<String> {
    let settings = &console.settings;
    // A pool of the job's own runtime: connections opened here must not outlive it in the
    // server's pool (they belong to this runtime's reactor).
    let pool = &member_infra::event_store::connect(&settings.postgres)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the event store (postgres.url): {e}"))?;
    match job.kind {
        Kind::Rebuild => {
            let plan = rebuild::RebuildPlan {
                targets: vec![job.target],
                reshard: None,
                batch: 2000,
            };
            let report = rebuild::rebuild(settings, pool, &plan, shutdown).await?;
            Ok(rebuild::render(&report))
        }
        Kind::Verify { repair } => {
            let options = verify::VerifyOptions {
                target: job.target,
                sample: None,
                repair,
                settle: Duration::from_secs(2),
            };
            let report = verify::verify(settings, pool, &options, shutdown).await?;
            Ok(verify::render(&report))
        }
    }
}

/// `GET /console/jobs`.
pub async fn page(State(state): State<AppState>, operator: Operator) -> Html<String> {
    let kinds = ["rebuild", "verify", "verify-repair"]
        .map(|k| format!("<option value=\"{k}\">{}</option>", k.replace('-', " --")))
        .join("");
    let targets: String = Target::ALL
        .into_iter()
        .map(|t| format!("<option value=\"{0}\">{0}</option>", t.as_str()))
        .collect();
    let body = format!(
        "<h2>Jobs</h2><form method=\"post\" action=\"/console/jobs\" id=\"start-job\" class=\"inline\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label>Job <select name=\"kind\" id=\"job-kind\">{kinds}</select></label> \
         <label>Target <select name=\"target\" id=\"job-target\">{targets}</select></label> \
         <button type=\"submit\" id=\"start\">Start</button></form>\
         <p class=\"muted\">Jobs run in the server: closing this page does not stop them.</p>\
         <div id=\"jobs\" data-refresh=\"/console/jobs/list\" data-every=\"1000\">{}</div>",
        escape(&operator.csrf),
        render(&state.console)
    );
    html::page(&operator, "jobs", "Jobs", &body)
}

/// `GET /console/jobs/list`: the jobs table, for the page to refresh.
pub async fn fragment(State(state): State<AppState>, _: Operator) -> Html<String> {
    Html(render(&state.console))
}

fn render(console: &Console) -> String {
    let jobs = console.jobs.snapshot();
    if jobs.is_empty() {
        return "<p class=\"muted\" id=\"no-jobs\">No jobs yet.</p>".into();
    }
    let mut out = String::from(
        "<table id=\"job-list\"><thead><tr><th>#</th><th>Job</th><th>Target</th><th>By</th>\
         <th>Started</th><th>Progress</th><th>Result</th></tr></thead><tbody>",
    );
    for job in jobs {
        let at = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
        let (state, progress, result) = match job.outcome() {
            None => {
                let step = job.observer.current();
                let progress = match step {
                    Some(s) => {
                        let max = s.total.unwrap_or(0).max(s.position).max(1);
                        format!(
                            "<progress value=\"{}\" max=\"{max}\"></progress> {} {}/{}",
                            s.position,
                            escape(&s.label),
                            s.position,
                            s.total.map(|t| t.to_string()).unwrap_or("?".into())
                        )
                    }
                    None => "<progress></progress> starting".into(),
                };
                ("running", progress, String::new())
            }
            Some((Outcome::Succeeded(summary), done)) => (
                "succeeded",
                "<progress value=\"1\" max=\"1\"></progress> done".into(),
                format!(
                    "<pre>{}</pre><span class=\"muted\">finished {}</span>",
                    escape(&summary),
                    at(done)
                ),
            ),
            Some((Outcome::Failed(error), done)) => (
                "failed",
                String::new(),
                format!(
                    "<pre class=\"down\">{}</pre><span class=\"muted\">finished {}</span>",
                    escape(&error),
                    at(done)
                ),
            ),
        };
        out.push_str(&format!(
            "<tr id=\"job-{id}\" data-state=\"{state}\" data-kind=\"{kind}\" data-target=\"{target}\">\
             <td>{id}</td><td>{kind}</td><td>{target}</td><td>{by}</td><td>{started}</td>\
             <td class=\"progress\">{progress}</td><td class=\"{state}\"><strong class=\"state\">{state}</strong>{result}</td></tr>",
            id = job.id,
            kind = job.kind.label(),
            target = job.target.as_str(),
            by = escape(&job.started_by),
            started = at(job.started_at),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

#[derive(Debug, Deserialize)]
pub struct StartJob {
    csrf: String,
    kind: String,
    target: String,
}

/// `POST /console/jobs`: starts a job (409 when the target has one running).
pub async fn start(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<StartJob>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) = form.map_err(|_| ConsoleError::CrossSite("no token"))?;
    csrf::check(&operator, &headers, &form.csrf)?;
    let kind = Kind::parse(&form.kind)?;
    let target = form
        .target
        .parse::<Target>()
        .map_err(|e| ConsoleError::InvalidRequest(e.to_string()))?;
    state
        .console
        .jobs
        .start(&state.console, kind, target, &operator.caller.name)?;
    Ok(Redirect::to("/console/jobs").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_target_with_a_running_job_takes_no_second_one() {
        let settings = member_infra::config::Settings::load_from(None, Vec::new()).unwrap();
        let console = Arc::new(Console::new(&settings).unwrap());
        // A running job (no outcome yet), as `start` leaves it.
        let running = Arc::new(Job {
            id: 7,
            kind: Kind::Rebuild,
            target: Target::Mysql,
            started_by: "alice".into(),
            started_at: Utc::now(),
            observer: Observer::default(),
            outcome: Mutex::new(None),
        });
        console.jobs.list().push(running.clone());
        for kind in [Kind::Rebuild, Kind::Verify { repair: true }] {
            match console.jobs.start(&console, kind, Target::Mysql, "bob") {
                Err(ConsoleError::Conflict(message)) => {
                    assert!(message.contains("job 7"), "{message}")
                }
                other => panic!("expected a conflict, got {:?}", other.map(|j| j.id)),
            }
        }
        assert_eq!(console.jobs.snapshot().len(), 1, "nothing was added");
        // Once it ended, its line stays and renders with its result.
        finish(&running, Ok("rebuilt mysql".into()));
        assert!(!running.running());
        let html = render(&console);
        assert!(
            html.contains("data-state=\"succeeded\"") && html.contains("rebuilt mysql"),
            "{html}"
        );
    }
}
