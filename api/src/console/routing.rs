//! The routing view: each backend's health, breaker, fault flag and pins, the chain of each read
//! class; pin or release a backend, inject or clear a fault. Every change goes through a
//! confirmation page (GET, changes nothing) whose form posts it with the CSRF token; the change
//! itself is the admin endpoints' own code (`query_api::admin::{set_fault, set_pin}`).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use member_projections::Target;
use member_read_policy::routing::{may_serve, ReadClass};
use serde::Deserialize;

use super::csrf;
use super::errors::ConsoleError;
use super::html::{self, escape};
use super::session::Operator;
use crate::query_api::{admin, AppState, QueryError};

/// A routing change, as the confirmation page and the form carry it.
#[derive(Debug, Deserialize)]
pub struct Change {
    /// `fault` or `pin`.
    action: String,
    /// The backend (for a pin: empty to release).
    #[serde(default)]
    backend: String,
    /// For `fault`: `true` to inject, `false` to clear.
    #[serde(default)]
    down: Option<bool>,
    /// For `pin`: the read class.
    #[serde(default)]
    class: String,
}

enum Parsed {
    Fault(Target, bool),
    Pin(ReadClass, Option<Target>),
}

impl Change {
    fn parse(&self) -> Result<Parsed, ConsoleError> {
        let target = |name: &str| {
            name.parse::<Target>()
                .map_err(|e| ConsoleError::InvalidRequest(e.to_string()))
        };
        match self.action.as_str() {
            "fault" => {
                let down = self.down.ok_or_else(|| {
                    ConsoleError::InvalidRequest("down must be true or false".into())
                })?;
                Ok(Parsed::Fault(target(&self.backend)?, down))
            }
            "pin" => {
                let class = ReadClass::parse(&self.class).ok_or_else(|| {
                    ConsoleError::InvalidRequest("class must be order or marketing".into())
                })?;
                let pin = match self.backend.as_str() {
                    "" => None,
                    name => {
                        let t = target(name)?;
                        if !may_serve(class, t) {
                            return Err(ConsoleError::InvalidRequest(format!(
                                "{t} may not serve class {}",
                                class.as_str()
                            )));
                        }
                        Some(t)
                    }
                };
                Ok(Parsed::Pin(class, pin))
            }
            _ => Err(ConsoleError::InvalidRequest(
                "action must be fault or pin".into(),
            )),
        }
    }
}

fn describe(change: &Parsed) -> String {
    match change {
        Parsed::Fault(t, true) => format!(
            "Inject a fault into <strong>{t}</strong>: the query path treats it as down and \
             moves its reads to the next backend of each chain."
        ),
        Parsed::Fault(t, false) => {
            format!("Clear the fault of <strong>{t}</strong>: it serves reads again.")
        }
        Parsed::Pin(class, Some(t)) => format!(
            "Pin <strong>{t}</strong> for class <strong>{}</strong>: its reads go there first.",
            class.as_str()
        ),
        Parsed::Pin(class, None) => format!(
            "Release the pin of class <strong>{}</strong>: its reads follow the normal chain.",
            class.as_str()
        ),
    }
}

/// `GET /console/routing`.
pub async fn page(State(state): State<AppState>, operator: Operator) -> Html<String> {
    let registry = state.registry();
    let mut body = String::from(
        "<h2>Routing</h2><table id=\"backends\"><thead><tr><th>Backend</th><th>State</th>\
         <th>Breaker</th><th>Pinned for</th><th>Fault</th></tr></thead><tbody>",
    );
    for target in Target::ALL {
        let b = registry.backend(target);
        let pinned: Vec<&str> = ReadClass::ALL
            .into_iter()
            .filter(|c| registry.pin(*c) == Some(target))
            .map(|c| c.as_str())
            .collect();
        let (state_class, state_text) = if b.faulted() {
            ("down", "faulted")
        } else if b.recovering() {
            ("warn", "recovering")
        } else if b.available() {
            ("ok", "available")
        } else {
            ("down", "unavailable")
        };
        let t = target.as_str();
        let action = if b.faulted() {
            format!("<a class=\"button\" id=\"clear-{t}\" href=\"/console/routing/confirm?action=fault&amp;backend={t}&amp;down=false\">Clear fault</a>")
        } else {
            format!("<a class=\"button danger\" id=\"fault-{t}\" href=\"/console/routing/confirm?action=fault&amp;backend={t}&amp;down=true\">Inject fault</a>")
        };
        body.push_str(&format!(
            "<tr data-backend=\"{t}\"><td>{t}</td><td class=\"{state_class}\">{state_text}</td>\
             <td>{}</td><td>{}</td><td>{action}</td></tr>",
            b.breaker_state().as_str(),
            pinned.join(", ")
        ));
    }
    body.push_str("</tbody></table><h3>Read chains</h3><table id=\"chains\"><thead><tr><th>Class</th><th>Chain</th><th>Pin</th><th></th></tr></thead><tbody>");
    for class in ReadClass::ALL {
        let c = class.as_str();
        let chain: Vec<&str> = registry.chain(class).iter().map(|t| t.as_str()).collect();
        let options: String = Target::ALL
            .into_iter()
            .filter(|t| may_serve(class, *t))
            .map(|t| format!("<option value=\"{0}\">{0}</option>", t.as_str()))
            .collect();
        let release = match registry.pin(class) {
            Some(_) => format!("<a class=\"button\" id=\"release-{c}\" href=\"/console/routing/confirm?action=pin&amp;class={c}&amp;backend=\">Release pin</a>"),
            None => String::new(),
        };
        body.push_str(&format!(
            "<tr data-class=\"{c}\"><td>{c}</td><td class=\"chain\">{}</td><td>{}</td><td>\
             <form method=\"get\" action=\"/console/routing/confirm\" class=\"inline\">\
             <input type=\"hidden\" name=\"action\" value=\"pin\">\
             <input type=\"hidden\" name=\"class\" value=\"{c}\">\
             <select name=\"backend\" id=\"pin-{c}-backend\">{options}</select>\
             <button type=\"submit\" id=\"pin-{c}\">Pin…</button></form> {release}</td></tr>",
            escape(&chain.join(" → ")),
            registry.pin(class).map(|t| t.as_str()).unwrap_or("—"),
        ));
    }
    body.push_str("</tbody></table>");
    html::page(&operator, "routing", "Routing", &body)
}

/// `GET /console/routing/confirm?...`: what the change will do, and the button that does it.
pub async fn confirm(
    operator: Operator,
    query: Result<Query<Change>, axum::extract::rejection::QueryRejection>,
) -> Result<Html<String>, ConsoleError> {
    let Query(change) =
        query.map_err(|e| ConsoleError::InvalidRequest(format!("malformed change: {e}")))?;
    let parsed = change.parse()?;
    let down = change.down.map(|d| d.to_string()).unwrap_or_default();
    Ok(html::confirm_page(
        &operator,
        "routing",
        &describe(&parsed),
        "/console/routing",
        &[
            ("action", &change.action),
            ("backend", &change.backend),
            ("down", &down),
            ("class", &change.class),
        ],
        "Confirm",
    ))
}

#[derive(Debug, Deserialize)]
pub struct Confirmed {
    csrf: String,
    #[serde(default)]
    confirm: String,
    action: String,
    #[serde(default)]
    backend: String,
    #[serde(default)]
    down: String,
    #[serde(default)]
    class: String,
}

/// `POST /console/routing`: applies a confirmed change.
pub async fn apply(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    form: Result<Form<Confirmed>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) = form.map_err(|_| ConsoleError::CrossSite("no token"))?;
    csrf::check(&operator, &headers, &form.csrf)?;
    if form.confirm != "yes" {
        return Err(ConsoleError::InvalidRequest(
            "not confirmed: nothing was changed".into(),
        ));
    }
    let down = match form.down.as_str() {
        "" => None,
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            return Err(ConsoleError::InvalidRequest(
                "down must be true or false".into(),
            ))
        }
    };
    let change = Change {
        action: form.action,
        backend: form.backend,
        down,
        class: form.class,
    };
    let who = &operator.caller.name;
    let applied = match change.parse()? {
        Parsed::Fault(t, down) => admin::set_fault(&state, who, t.as_str(), down).map(|_| ()),
        Parsed::Pin(class, pin) => {
            admin::set_pin(&state, who, class.as_str(), pin.map(|t| t.as_str())).map(|_| ())
        }
    };
    applied.map_err(|e| match e {
        QueryError::InvalidRequest(m) => ConsoleError::InvalidRequest(m),
        other => ConsoleError::InvalidRequest(other.to_string()),
    })?;
    Ok(Redirect::to("/console/routing").into_response())
}
