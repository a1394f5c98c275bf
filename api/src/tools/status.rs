//! `member status`: health and lag of the event store, the relay and every projection, as a table
//! or as JSON (`--json`). Exit code 0 when everything answers, 1 otherwise.

use std::time::Duration;

use member_infra::config::Settings;
use member_infra::kafka::lag::ConsumerGroupLag;
use member_infra::relay::{Checkpoint, EventStoreReader};
use member_infra::stores::Store;
use member_projections::Target;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub healthy: bool,
    /// Records (or events, for the relay) not yet applied, when known.
    pub behind: Option<u64>,
    pub detail: String,
}

const PROBE: Duration = Duration::from_secs(3);

/// Probes every component. Never fails: what does not answer is reported as unhealthy.
pub async fn collect(settings: &Settings) -> Vec<Component> {
    let mut out = Vec::new();
    let pool = tokio::time::timeout(
        PROBE,
        member_infra::event_store::connect(&settings.postgres),
    )
    .await;
    match pool {
        Ok(Ok(pool)) => {
            out.push(Component {
                name: "event-store".into(),
                healthy: true,
                behind: None,
                detail: "postgresql answers".into(),
            });
            let reader = EventStoreReader::new(pool.clone(), crate::app::vault(settings));
            let relay = async {
                let at = Checkpoint::load(&pool, &settings.kafka.topic).await?;
                reader.events_after(at).await
            };
            match tokio::time::timeout(PROBE, relay).await {
                Ok(Ok(behind)) => out.push(Component {
                    name: "relay".into(),
                    healthy: true,
                    behind: Some(behind as u64),
                    detail: format!("events not yet published to {}", settings.kafka.topic),
                }),
                Ok(Err(e)) => out.push(unhealthy("relay", format!("checkpoint: {e}"))),
                Err(_) => out.push(unhealthy("relay", "checkpoint: timed out".into())),
            }
        }
        Ok(Err(e)) => out.push(unhealthy("event-store", e.to_string())),
        Err(_) => out.push(unhealthy("event-store", "timed out".into())),
    }
    for target in Target::ALL {
        let all = settings.clone();
        let lag =
            tokio::task::spawn_blocking(move || ConsumerGroupLag::records_behind(&all, target))
                .await;
        let (behind, lag_detail) = match lag {
            Ok(Ok(n)) => (Some(n), "records behind the topic".to_owned()),
            Ok(Err(e)) => (None, format!("lag unknown: {e}")),
            Err(e) => (None, format!("lag unknown: {e}")),
        };
        let health = probe(target, settings).await;
        out.push(Component {
            name: target.as_str().into(),
            healthy: health.is_ok() && behind.is_some(),
            behind,
            detail: match health {
                Ok(what) => format!("{what}; {lag_detail}"),
                Err(e) => format!("{e}; {lag_detail}"),
            },
        });
    }
    out
}

/// Whether the store answers. The embedded search indexes are owned by the process that runs
/// their projector (one writer per index), so only their directory is checked here.
async fn probe(target: Target, settings: &Settings) -> Result<String, String> {
    match target {
        Target::SearchPrimary | Target::SearchBackup | Target::SearchMarketing
            if settings.search.engine == member_infra::config::SearchEngine::Tantivy =>
        {
            let cluster = target.as_str().trim_start_matches("search-");
            let dir = settings.data_dir.join("search").join(cluster);
            if dir.is_dir() {
                Ok(format!("index at {}", dir.display()))
            } else {
                Err(format!("no index at {}", dir.display()))
            }
        }
        _ => {
            let open = async {
                let store = Store::open(target, settings)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let ping = match &store {
                    Store::Mysql(s) => s.ping().await,
                    Store::Redis(s) => s.ping().await,
                    Store::Search(_) => Ok(()),
                };
                ping.map(|_| "answers".to_owned())
                    .map_err(|e| e.to_string())
            };
            tokio::time::timeout(PROBE, open)
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        }
    }
}

fn unhealthy(name: &str, detail: String) -> Component {
    Component {
        name: name.into(),
        healthy: false,
        behind: None,
        detail,
    }
}

/// The table `member status` prints.
pub fn render_table(components: &[Component]) -> String {
    let mut out = format!(
        "{:<18} {:<8} {:>10}  {}\n",
        "COMPONENT", "HEALTH", "BEHIND", "DETAIL"
    );
    for c in components {
        let behind = c
            .behind
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into());
        let health = if c.healthy { "up" } else { "DOWN" };
        out.push_str(&format!(
            "{:<18} {:<8} {:>10}  {}\n",
            c.name, health, behind, c.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_component_and_marks_the_down_ones() {
        let table = render_table(&[
            Component {
                name: "relay".into(),
                healthy: true,
                behind: Some(3),
                detail: "x".into(),
            },
            Component {
                name: "redis-b".into(),
                healthy: false,
                behind: None,
                detail: "refused".into(),
            },
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("relay") && lines[1].contains(" up ") && lines[1].contains('3')
        );
        assert!(
            lines[2].starts_with("redis-b") && lines[2].contains("DOWN") && lines[2].contains('-')
        );
    }
}
