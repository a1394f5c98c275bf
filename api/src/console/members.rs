//! The members view: find a member by id or `kind:value`; its document (identity values masked
//! unless the operator reveals them: a POST with the CSRF token, recorded as an access with who,
//! whose member id and when, in the `audit` log target and on the page); the member as the event
//! store and each of the six stores hold it, side by side, with verify's comparison
//! (`member_projections::verify::compare_documents`) highlighting what differs; and its event
//! history with caller and request id (the command API's own history rendering).
//!
//! The value an operator searched for is never logged (it is personal data).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::Form;
use chrono::{DateTime, SecondsFormat, Utc};
use member_domain::IdentityKey;
use member_infra::event_store::{members as event_members, replay};
use member_projections::verify::{compare_documents, FindingKind};
use member_projections::{MemberDocument, Target};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::csrf;
use super::errors::ConsoleError;
use super::html::{self, escape};
use super::session::Operator;
use crate::access::RequestId;
use crate::command_api::history::{entry, mask};
use crate::query_api::AppState;

const PROBE: Duration = Duration::from_secs(3);

/// What the search field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Id(Uuid),
    Identity(IdentityKey),
}

impl Lookup {
    /// A member id, or `kind:value` (openids: `wechat_openid:app:openid`).
    pub fn parse(q: &str) -> Result<Self, ConsoleError> {
        let q = q.trim();
        if let Ok(id) = Uuid::parse_str(q) {
            return Ok(Lookup::Id(id));
        }
        let (kind, value) = q.split_once(':').ok_or_else(|| {
            ConsoleError::InvalidRequest(
                "search for a member id or kind:value (e.g. mobile:+8613800138000)".into(),
            )
        })?;
        IdentityKey::parse(kind.trim(), value.trim())
            .map(Lookup::Identity)
            .map_err(|e| ConsoleError::InvalidRequest(e.to_string()))
    }
}

/// One reveal of a member's identity values.
#[derive(Debug, Clone)]
pub struct Reveal {
    pub caller: String,
    pub member_id: Uuid,
    pub at: DateTime<Utc>,
    pub request_id: String,
}

/// The reveals of this process, newest last (the durable record is the `audit` log target).
#[derive(Default)]
pub struct Audit {
    reveals: Mutex<VecDeque<Reveal>>,
}

impl Audit {
    fn record(&self, reveal: Reveal) {
        tracing::info!(
            target: "audit",
            caller = %reveal.caller,
            member_id = %reveal.member_id,
            request_id = %reveal.request_id,
            "identity values revealed in the console"
        );
        let mut reveals = self.reveals.lock().unwrap_or_else(|p| p.into_inner());
        reveals.push_back(reveal);
        while reveals.len() > 10_000 {
            reveals.pop_front();
        }
    }

    fn of(&self, member_id: Uuid) -> Vec<Reveal> {
        self.reveals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.member_id == member_id)
            .cloned()
            .collect()
    }
}

#[derive(Debug, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

fn search_form(q: &str) -> String {
    format!(
        "<h2>Members</h2><form method=\"get\" action=\"/console/members\" id=\"search\" class=\"inline\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"member id or kind:value\" size=\"48\" required>\
         <button type=\"submit\">Find</button></form>",
        escape(q)
    )
}

/// `GET /console/members[?q=...]`.
pub async fn page(
    State(state): State<AppState>,
    operator: Operator,
    query: Result<Query<Search>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Query(search) =
        query.map_err(|_| ConsoleError::InvalidRequest("malformed search".into()))?;
    if search.q.trim().is_empty() {
        return Ok(html::page(
            &operator,
            "members",
            "Members",
            &search_form(""),
        ));
    }
    let member_id = match Lookup::parse(&search.q)? {
        Lookup::Id(id) => id,
        Lookup::Identity(key) => {
            let holders = tokio::time::timeout(
                PROBE,
                replay::holders_of(
                    &state.console.pool,
                    &state.console.vault,
                    std::slice::from_ref(&key),
                ),
            )
            .await
            .map_err(|_| ConsoleError::Unavailable("the event store"))?
            .map_err(|e| ConsoleError::unavailable("the event store", e))?;
            *holders
                .get(&key)
                .ok_or_else(|| ConsoleError::NotFound("no member holds that identity".into()))?
        }
    };
    let body = member(&state, &operator, member_id, &search.q, false).await?;
    Ok(html::page(&operator, "members", "Member", &body))
}

#[derive(Debug, Deserialize)]
pub struct RevealForm {
    csrf: String,
    #[serde(default)]
    q: String,
}

/// `POST /console/members/{id}/reveal`: the same page with identity values in the clear,
/// recorded in the audit.
pub async fn reveal(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    request_id: RequestId,
    Path(id): Path<String>,
    form: Result<Form<RevealForm>, axum::extract::rejection::FormRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Form(form) = form.map_err(|_| ConsoleError::CrossSite("no token"))?;
    csrf::check(&operator, &headers, &form.csrf)?;
    let member_id = Uuid::parse_str(&id)
        .map_err(|_| ConsoleError::InvalidRequest("member id is not a uuid".into()))?;
    state.console.audit.record(Reveal {
        caller: operator.caller.name.clone(),
        member_id,
        at: Utc::now(),
        request_id: request_id.0,
    });
    let body = member(&state, &operator, member_id, &form.q, true).await?;
    Ok(html::page(&operator, "members", "Member", &body))
}

/// An identity's value as shown: masked unless revealed.
fn shown(key: &IdentityKey, reveal: bool) -> String {
    if reveal {
        key.value().to_owned()
    } else {
        mask(key.value())
    }
}

/// The identity slot of a key: its kind, and an openid's app.
fn slot(key: &IdentityKey) -> String {
    match key.app() {
        Some(app) => format!("{}/{}", key.kind().as_str(), app.as_str()),
        None => key.kind().as_str().to_owned(),
    }
}

fn value_in(doc: &MemberDocument, slot_name: &str, reveal: bool) -> Option<String> {
    doc.identities
        .iter()
        .find(|i| slot(&i.key) == slot_name)
        .map(|i| shown(&i.key, reveal))
}

fn status_of(doc: &MemberDocument) -> String {
    serde_json::to_value(doc.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn member(
    state: &AppState,
    operator: &Operator,
    member_id: Uuid,
    q: &str,
    reveal: bool,
) -> Result<String, ConsoleError> {
    let pool = &state.console.pool;
    let truth = tokio::time::timeout(
        PROBE,
        replay::document_of(pool, &state.console.vault, member_id),
    )
    .await
    .map_err(|_| ConsoleError::Unavailable("the event store"))?
    .map_err(|e| ConsoleError::unavailable("the event store", e))?
    .ok_or_else(|| ConsoleError::NotFound(format!("no member {member_id}")))?;
    let history = tokio::time::timeout(
        PROBE,
        event_members::history_of(pool, &state.console.vault, member_id),
    )
    .await
    .map_err(|_| ConsoleError::Unavailable("the event store"))?
    .map_err(|e| ConsoleError::unavailable("the event store", e))?;
    let registry = state.registry();
    let mut stored = Vec::new();
    for target in Target::ALL {
        let reader = registry.backend(target).reader.clone();
        let read = tokio::time::timeout(PROBE, reader.by_id(member_id)).await;
        stored.push((
            target,
            match read {
                Ok(Ok(doc)) => Ok(doc),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            },
        ));
    }

    let mut out = search_form(q);
    // The document.
    out.push_str(&format!(
        "<section id=\"member\" data-member-id=\"{member_id}\" data-revealed=\"{reveal}\">\
         <h3>Member {member_id}</h3><table class=\"kv\" id=\"document\">\
         <tr><th>Version</th><td>{}</td></tr><tr><th>Status</th><td>{}</td></tr>\
         <tr><th>Updated</th><td>{}</td></tr>",
        truth.version,
        escape(&status_of(&truth)),
        truth
            .updated_at
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    ));
    for i in &truth.identities {
        out.push_str(&format!(
            "<tr><th>{}</th><td class=\"identity\" data-kind=\"{}\">{}</td></tr>",
            escape(&slot(&i.key)),
            i.key.kind().as_str(),
            escape(&shown(&i.key, reveal))
        ));
    }
    out.push_str("</table>");
    if reveal {
        out.push_str(
            "<p class=\"warn\" id=\"revealed\">Identity values are shown in the clear; this \
             access is recorded with your name.</p>",
        );
    } else {
        out.push_str(&format!(
            "<form method=\"post\" action=\"/console/members/{member_id}/reveal\" id=\"reveal-form\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"q\" value=\"{}\">\
             <button type=\"submit\" id=\"reveal\" class=\"danger\">Reveal identity values (audited)</button></form>",
            escape(&operator.csrf),
            escape(q)
        ));
    }
    out.push_str("</section>");

    // Side by side.
    let mut slots = BTreeSet::new();
    for doc in std::iter::once(&truth).chain(
        stored
            .iter()
            .filter_map(|(_, d)| d.as_ref().ok().and_then(|d| d.as_ref())),
    ) {
        for i in &doc.identities {
            slots.insert(slot(&i.key));
        }
    }
    // One row per store (the event store first: the truth), one column per field; a cell that
    // differs from the truth is highlighted, and the last column is verify's verdict.
    out.push_str(
        "<h3>In each store</h3><div class=\"wide\"><table id=\"stores\"><thead><tr>\
         <th>Store</th><th>version</th><th>status</th>",
    );
    for s in &slots {
        out.push_str(&format!("<th>{}</th>", escape(s)));
    }
    out.push_str("<th>verify</th></tr></thead><tbody>");
    let fields = |doc: &MemberDocument| -> Vec<String> {
        let mut values = vec![doc.version.to_string(), status_of(doc)];
        values.extend(
            slots
                .iter()
                .map(|s| value_in(doc, s, reveal).unwrap_or_default()),
        );
        values
    };
    let truth_fields = fields(&truth);
    out.push_str("<tr class=\"truth\"><th>event store</th>");
    for v in &truth_fields {
        out.push_str(&format!("<td>{}</td>", escape(v)));
    }
    out.push_str("<td>the truth</td></tr>");
    for (target, doc) in &stored {
        out.push_str(&format!(
            "<tr data-store=\"{0}\"><th>{0}</th>",
            target.as_str()
        ));
        let cache = matches!(target, Target::RedisA | Target::RedisB);
        match doc {
            Ok(Some(doc)) => {
                for (v, t) in fields(doc).iter().zip(&truth_fields) {
                    let class = if v == t { "" } else { "diff" };
                    out.push_str(&format!("<td class=\"{class}\">{}</td>", escape(v)));
                }
            }
            Ok(None) => {
                // Absent from a cache is normal; from any other store it is the difference.
                let class = if cache { "muted" } else { "diff" };
                for _ in &truth_fields {
                    out.push_str(&format!("<td class=\"{class}\">—</td>"));
                }
            }
            Err(_) => {
                for _ in &truth_fields {
                    out.push_str("<td class=\"down\">?</td>");
                }
            }
        }
        let verdict = match doc {
            Err(e) => format!(
                "<td class=\"down\" data-finding=\"error\">{}</td>",
                escape(e)
            ),
            Ok(doc) => match compare_documents(member_id, Some(&truth), doc.as_ref()) {
                None => "<td class=\"ok\" data-finding=\"equal\">equal</td>".to_owned(),
                // A cache without the member is not a difference (see tools::verify).
                Some(f) if cache && f.kind == FindingKind::Missing => {
                    "<td class=\"muted\" data-finding=\"not-cached\">not cached</td>".to_owned()
                }
                Some(f) => format!(
                    "<td class=\"diff\" data-finding=\"{0}\">{0}</td>",
                    f.kind.as_str()
                ),
            },
        };
        out.push_str(&verdict);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");

    // History.
    out.push_str("<h3>History</h3><table id=\"history\"><thead><tr><th>Version</th><th>Event</th><th>At</th><th>Caller</th><th>Request id</th><th>Detail</th></tr></thead><tbody>");
    // An erased member's values are gone for every reader (ADR 0033): shown as "[erased]".
    let erased = history
        .iter()
        .any(|row| row.0 == member_domain::MemberEvent::ERASED);
    for row in history {
        let e = entry(row, reveal && !erased, erased);
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let detail = match e.get("identity") {
            Some(Value::Object(i)) => {
                let get = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("");
                let app = match get("app") {
                    "" => String::new(),
                    a => format!("/{a}"),
                };
                format!("{}{app} {}", get("kind"), get("value"))
            }
            _ => String::new(),
        };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"caller\">{}</td><td class=\"request-id\">{}</td><td class=\"identity\">{}</td></tr>",
            e.get("version").map(|v| v.to_string()).unwrap_or_default(),
            escape(&text("type")),
            escape(&text("at")),
            escape(&text("caller")),
            escape(&text("request_id")),
            escape(&detail)
        ));
    }
    out.push_str("</tbody></table>");

    // Audit of reveals.
    let reveals = state.console.audit.of(member_id);
    out.push_str("<h3>Reveals of this member</h3>");
    if reveals.is_empty() {
        out.push_str("<p class=\"muted\" id=\"reveals\">None recorded by this process.</p>");
    } else {
        out.push_str("<table id=\"reveals\"><thead><tr><th>Who</th><th>When</th><th>Request id</th></tr></thead><tbody>");
        for r in reveals.iter().rev() {
            out.push_str(&format!(
                "<tr><td class=\"revealer\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.caller),
                r.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                escape(&r.request_id)
            ));
        }
        out.push_str("</tbody></table>");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_a_member_id_or_kind_value() {
        let id = Uuid::now_v7();
        assert_eq!(Lookup::parse(&format!(" {id} ")).unwrap(), Lookup::Id(id));
        match Lookup::parse("mobile:13800138000").unwrap() {
            Lookup::Identity(k) => assert_eq!(k.value(), "+8613800138000"),
            other => panic!("{other:?}"),
        }
        assert!(Lookup::parse("nonsense").is_err());
        assert!(Lookup::parse("mobile:12").is_err());
        assert!(Lookup::parse("colour:red").is_err());
    }
}
