//! The governance view: `member governance scan`'s findings (open quarantine entries of legacy
//! imports re-checked, and WeChat bindings in the event store that break the openid rule), and
//! their repair after a confirmation step, recorded with the operator's name as actor and the
//! note they give (the CLI's own `governance::repair::resolve`).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::Form;
use serde::Deserialize;

use super::csrf;
use super::errors::ConsoleError;
use super::html::{self, escape};
use super::session::Operator;
use crate::query_api::AppState;
use crate::tools::governance::repair::{self, Resolution};
use crate::tools::governance::scan::{self, Finding, State as FindingState};

const SCAN_TIMEOUT: Duration = Duration::from_secs(30);

fn resolutions(state: FindingState) -> &'static [&'static str] {
    match state {
        FindingState::Importable | FindingState::Conflicting | FindingState::Imported => {
            &["release", "dismiss"]
        }
        FindingState::Unresolvable => &["dismiss"],
        FindingState::Abnormal => &["unbind"],
    }
}

fn state_name(state: FindingState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn findings(state: &AppState) -> Result<Vec<Finding>, ConsoleError> {
    let pool = &state.console.pool;
    let scanning = async {
        let vault = &state.console.vault;
        let mut findings = scan::quarantine_findings(pool, vault).await?;
        findings.extend(scan::store_findings(pool, vault, || {}).await?);
        anyhow::Ok(findings)
    };
    tokio::time::timeout(SCAN_TIMEOUT, scanning)
        .await
        .map_err(|_| ConsoleError::Unavailable("the scan (timed out)"))?
        .map_err(|e| ConsoleError::unavailable("the event store", format!("{e:#}")))
}

/// `GET /console/governance`: scans (it only reads) and lists the findings.
pub async fn page(
    State(state): State<AppState>,
    operator: Operator,
) -> Result<Html<String>, ConsoleError> {
    let findings = findings(&state).await?;
    let mut body = String::from("<h2>Governance</h2>");
    if findings.is_empty() {
        body.push_str(
            "<p class=\"ok\" id=\"no-findings\">The scan found nothing abnormal: no open \
             quarantine entries, no parked or unreadable records, no WeChat binding against \
             the openid rule.</p>",
        );
        return Ok(html::page(&operator, "governance", "Governance", &body));
    }
    body.push_str(&format!(
        "<p>{} findings.</p><table id=\"findings\"><thead><tr><th>Entry</th><th>Source</th><th>State</th>\
         <th>Reason</th><th>Detail</th><th>Repair</th></tr></thead><tbody>",
        findings.len()
    ));
    for f in &findings {
        let mut detail: Vec<String> = Vec::new();
        if let Some(d) = &f.detail {
            detail.push(d.clone());
        }
        if let (Some(line), Some(legacy)) = (f.line, &f.legacy_id) {
            detail.push(format!("line {line} legacy_id {legacy}"));
        }
        if let Some(m) = f.member_id {
            detail.push(format!("member {m}"));
        }
        for h in &f.holders {
            detail.push(format!("{} held by {}", h.kind, h.member_id));
        }
        let options: String = resolutions(f.state)
            .iter()
            .map(|r| format!("<option value=\"{r}\">{r}</option>"))
            .collect();
        body.push_str(&format!(
            "<tr data-entry=\"{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"small\">{}</td><td>\
             <form method=\"get\" action=\"/console/governance/confirm\" class=\"inline\">\
             <input type=\"hidden\" name=\"entry\" value=\"{id}\">\
             <select name=\"resolution\">{options}</select>\
             <input type=\"text\" name=\"note\" placeholder=\"why (ticket, reason)\" required maxlength=\"1000\">\
             <button type=\"submit\">Repair…</button></form></td></tr>",
            escape(f.source),
            state_name(f.state),
            escape(&f.reason),
            escape(&detail.join("; ")),
            id = escape(&f.id),
        ));
    }
    body.push_str("</tbody></table>");
    Ok(html::page(&operator, "governance", "Governance", &body))
}

#[derive(Debug, Deserialize)]
pub struct Repair {
    entry: String,
    resolution: String,
    #[serde(default)]
    note: String,
}

fn parse_resolution(s: &str) -> Result<Resolution, ConsoleError> {
    match s {
        "release" => Ok(Resolution::Release),
        "dismiss" => Ok(Resolution::Dismiss),
        "unbind" => Ok(Resolution::Unbind),
        _ => Err(ConsoleError::InvalidRequest(
            "resolution must be release, dismiss or unbind".into(),
        )),
    }
}

fn check_note(note: &str) -> Result<(), ConsoleError> {
    let note = note.trim();
    if note.is_empty() || note.len() > 1000 {
        return Err(ConsoleError::InvalidRequest(
            "a note (1-1000 characters) says why; nothing was changed".into(),
        ));
    }
    Ok(())
}

/// `GET /console/governance/confirm?entry=..&resolution=..&note=..`.
pub async fn confirm(
    operator: Operator,
    query: Result<Query<Repair>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Query(repair) =
        query.map_err(|e| ConsoleError::InvalidRequest(format!("malformed repair: {e}")))?;
    parse_resolution(&repair.resolution)?;
    check_note(&repair.note)?;
    let what = format!(
        "<strong>{}</strong> entry <strong>{}</strong>, recorded with actor <strong>{}</strong> \
         and note “{}”.",
        escape(&repair.resolution),
        escape(&repair.entry),
        escape(&operator.caller.name),
        escape(&repair.note)
    );
    Ok(html::confirm_page(
        &operator,
        "governance",
        &what,
        "/console/governance",
        &[
            ("entry", &repair.entry),
            ("resolution", &repair.resolution),
            ("note", &repair.note),
        ],
        "Repair",
    ))
}

#[derive(Debug, Deserialize)]
pub struct ConfirmedRepair {
    csrf: String,
    #[serde(default)]
    confirm: String,
    entry: String,
    resolution: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/governance`: resolves a confirmed entry and shows the outcome.
pub async fn apply(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<ConfirmedRepair>, axum::extract::rejection::FormRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Form(form) = form.map_err(|_| ConsoleError::CrossSite("no token"))?;
    csrf::check(&operator, &headers, &form.csrf)?;
    if form.confirm != "yes" {
        return Err(ConsoleError::InvalidRequest(
            "not confirmed: nothing was changed".into(),
        ));
    }
    let resolution = parse_resolution(&form.resolution)?;
    check_note(&form.note)?;
    tracing::info!(target: "audit", caller = %operator.caller.name, entry = %form.entry, resolution = %form.resolution, "console governance repair");
    let outcome = repair::resolve(
        &state.console.pool,
        &state.console.vault,
        &form.entry,
        resolution,
        &operator.caller.name,
        &form.note,
    )
    .await;
    let body = match outcome {
        Ok(done) => format!(
            "<h2>Governance</h2><p class=\"ok\" id=\"repaired\">{}: {}</p><p><a href=\"/console/governance\">Scan again</a></p>",
            escape(&form.entry),
            escape(&done)
        ),
        Err(e) => format!(
            "<h2>Governance</h2><p class=\"down\" id=\"not-repaired\">{}: not resolved: {}</p><p><a href=\"/console/governance\">Back</a></p>",
            escape(&form.entry),
            escape(&format!("{e:#}"))
        ),
    };
    Ok(html::page(&operator, "governance", "Governance", &body))
}
