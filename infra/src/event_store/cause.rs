//! Who did what: the cause every appended event records in its metadata — the caller's name
//! (an API caller, or `tool:<name>` for the operator tools), the request id, and the time. Never
//! the caller's key.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};

/// The metadata keys of a cause.
pub const CALLER: &str = "caller";
pub const REQUEST_ID: &str = "request_id";
pub const AT: &str = "at";

/// Who asked for a command, under which request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub caller: String,
    pub request_id: String,
}

impl Cause {
    pub fn new(caller: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            caller: caller.into(),
            request_id: request_id.into(),
        }
    }

    /// An operator tool (`member import`, `member governance repair`, `member seed`): the caller
    /// is `tool:<name>`, the request id one per run.
    pub fn tool(name: &str) -> Self {
        Self::new(format!("tool:{name}"), uuid::Uuid::now_v7().to_string())
    }

    /// The metadata entries of this cause, stamped with the current time.
    pub fn metadata(&self) -> HashMap<String, String> {
        self.metadata_at(Utc::now())
    }

    pub fn metadata_at(&self, at: DateTime<Utc>) -> HashMap<String, String> {
        HashMap::from([
            (CALLER.to_owned(), self.caller.clone()),
            (REQUEST_ID.to_owned(), self.request_id.clone()),
            (
                AT.to_owned(),
                at.to_rfc3339_opts(SecondsFormat::Micros, true),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_caller_request_and_time() {
        let m = Cause::new("hotel", "r-1").metadata();
        assert_eq!(m[CALLER], "hotel");
        assert_eq!(m[REQUEST_ID], "r-1");
        assert!(DateTime::parse_from_rfc3339(&m[AT]).is_ok(), "{}", m[AT]);
        let tool = Cause::tool("import");
        assert_eq!(tool.caller, "tool:import");
        assert!(uuid::Uuid::parse_str(&tool.request_id).is_ok());
    }
}
