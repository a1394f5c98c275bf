//! Freshness: the time from a command's response to the member being visible, at that version,
//! through each store's own reader. The whole application (`App` with every role, the same code
//! as `member run`) runs in this process over an isolated environment, so the readers are the
//! application's own; commands arrive at a steady 50/s.
//!
//! Each store is read in rounds, 2 ms apart, for every command it does not show yet and that is
//! due (read again after a fifth of its age, 5-100 ms), so a command is never counted as visible
//! earlier than it was (a late check can only make the figure worse, by at most a fifth or
//! 100 ms). A command's time is taken when the read that saw it returned (until 2026-12-05, when
//! the round's slowest read did). Until 2026-12-04 22:00 every round read every pending command,
//! and the watchers' own reads loaded the Elasticsearch clusters they measured.
//! Until 2026-12-04 17:30 one watcher per store took the commands in turn and, with
//! Elasticsearch's two-request lookups on a loaded machine, measured its own backlog; until 17:50
//! each command had a poller of its own, whose reads loaded the stores they measured. The clock
//! starts once a warm-up member is visible in every store (consumer groups joined).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use member_api::app::{App, Role};
use member_api::shutdown::Shutdown;
use member_domain::IdentityKey;
use member_projections::{MemberReader, Target};
use serde_json::json;
use tokio::sync::mpsc;

use crate::isolated::Isolated;
use crate::latency::Latency;
use crate::report::{Report, Row};

struct Acked {
    at: Instant,
    key: IdentityKey,
    version: u64,
}

/// When a pending command is read again: after a fifth of its age, between 5 and 100 ms, so a
/// time to visibility is overstated by at most a fifth or 100 ms. Reading every pending command
/// every 2 ms (and then every 20 ms) made the watchers' own lookups most of what three one-node
/// Elasticsearch clusters on two cores did (at 50 commands/s and a second to visibility, thousands
/// of lookups/s per cluster, each two requests), and the figure measured that load.
fn next_read(age: Duration, floor: Duration) -> Duration {
    (age / 5).clamp(floor, Duration::from_millis(100).max(floor))
}

/// The shortest time between two reads of one pending command: `BENCH_FRESHNESS_MIN_READ_MS`,
/// 5 ms by default; anything but a whole number of milliseconds is refused.
fn read_floor() -> anyhow::Result<Duration> {
    match std::env::var("BENCH_FRESHNESS_MIN_READ_MS") {
        Err(_) => Ok(Duration::from_millis(5)),
        Ok(v) => v.trim().parse().map(Duration::from_millis).map_err(|_| {
            anyhow::anyhow!(
                "BENCH_FRESHNESS_MIN_READ_MS must be a whole number of milliseconds, not {v:?}"
            )
        }),
    }
}

async fn watch(
    reader: Arc<dyn MemberReader>,
    mut rx: mpsc::UnboundedReceiver<Acked>,
    floor: Duration,
) -> (Latency, u64, u64) {
    let mut reads = 0u64;
    // Rounds over every command the store does not show yet, all of them read at once, 2 ms
    // apart. One watcher taking the commands in turn falls behind as soon as a read takes longer
    // than the gap between two commands (an Elasticsearch lookup is two requests) and then
    // measures its own queue; a poller per command reads hundreds of times per command and loads
    // the stores it measures. A round reads the pending commands that are due (`next_read`).
    let mut latency = Latency::default();
    let mut unseen = 0;
    // Each pending command with the time of its next read.
    let mut pending: Vec<(Instant, Acked)> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() {
        loop {
            match rx.try_recv() {
                Ok(acked) => pending.push((Instant::now(), acked)),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            match rx.recv().await {
                Some(acked) => pending.push((Instant::now(), acked)),
                None => open = false,
            }
            continue;
        }
        let now = Instant::now();
        let due: Vec<bool> = pending
            .iter_mut()
            .map(|(next, acked)| {
                let due = *next <= now;
                if due {
                    *next = now + next_read(now - acked.at, floor);
                    reads += 1;
                }
                due
            })
            .collect();
        // Each read's time is taken when that read returns, not when the round's slowest one
        // does: the round waits for all of them, and counting that wait (an Elasticsearch lookup
        // is two requests, slow on a loaded machine) charged the other stores' reads with it.
        let seen: Vec<Option<Duration>> =
            futures::future::join_all(pending.iter().zip(&due).map(|((_, acked), due)| {
                let reader = reader.clone();
                async move {
                    if !*due {
                        return None;
                    }
                    let read = reader.by_identity(&acked.key).await;
                    let age = acked.at.elapsed();
                    matches!(read, Ok(Some(doc)) if doc.version >= acked.version).then_some(age)
                }
            }))
            .await;
        let mut still = Vec::with_capacity(pending.len());
        for ((next, acked), seen) in pending.into_iter().zip(seen) {
            if let Some(age) = seen {
                latency.record(age);
            } else if acked.at.elapsed() > Duration::from_secs(30) {
                unseen += 1;
            } else {
                still.push((next, acked));
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (latency, unseen, reads)
}

pub async fn bench(report: &mut Report, env: &Isolated, seconds: u64) -> anyhow::Result<()> {
    let floor = read_floor()?;
    let app = App::build(&env.settings, &Role::all()).await?;
    let readers: BTreeMap<Target, Arc<dyn MemberReader>> =
        app.stores().iter().map(|(t, s)| (*t, s.reader())).collect();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(Shutdown::on(async {
        let _ = stop_rx.await;
    })));
    let client = reqwest::Client::new();
    let base = env.command_url("");
    // Wait until the command API answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the command API did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm-up: one member visible in every store before the clock starts. On a broker that has
    // just started, the first consumer group creates `__consumer_offsets` and every group's first
    // join waits for `group.initial.rebalance.delay.ms`: seconds that are start-up, not freshness.
    let warm = "899999999999";
    let r = client
        .post(format!("{base}/v1/members"))
        .bearer_auth("local-writer-key")
        .json(&json!({"identities": [{"kind": "elong_card", "value": warm}]}))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "warm-up register: {}",
        r.status()
    );
    let warm = IdentityKey::parse("elong_card", warm)?;
    for (target, reader) in &readers {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !matches!(reader.by_identity(&warm).await, Ok(Some(_))) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not show the warm-up member",
                target.as_str()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut senders = Vec::new();
    let mut watchers = Vec::new();
    for (target, reader) in &readers {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        watchers.push((*target, tokio::spawn(watch(reader.clone(), rx, floor))));
    }
    let senders = Arc::new(senders);
    let profile = crate::profile::start(report, "freshness", Duration::from_secs(seconds));
    let cpu = crate::cpu::snapshot();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut commands = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut n: u64 = 0;
    let mut failed = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        n += 1;
        let card = format!("{:012}", 900_000_000_000u64 + n);
        let (client, url, senders) = (
            client.clone(),
            format!("{base}/v1/members"),
            senders.clone(),
        );
        commands.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth("local-writer-key")
                .json(&json!({"identities": [{"kind": "elong_card", "value": card}]}))
                .send()
                .await
                .ok()?;
            let at = Instant::now();
            if r.status().as_u16() != 201 {
                return None;
            }
            let body: serde_json::Value = r.json().await.ok()?;
            let version = body["version"].as_u64()?;
            let key = IdentityKey::parse("elong_card", &card).ok()?;
            for tx in senders.iter() {
                let _ = tx.send(Acked {
                    at,
                    key: key.clone(),
                    version,
                });
            }
            Some(())
        }));
    }
    for c in commands {
        if c.await?.is_none() {
            failed += 1;
        }
    }
    drop(senders);
    let cpu = cpu.since();
    let mut worst = 0.0f64;
    let mut parts = Vec::new();
    let mut reads_by_store = Vec::new();
    for (target, w) in watchers {
        let (latency, unseen, reads) = w.await?;
        reads_by_store.push(format!("{} {reads}", target.as_str()));
        worst = worst.max(latency.ms(0.99));
        parts.push(format!(
            "{} p50 {:.0} / p99 {:.0} ms{}",
            target.as_str(),
            latency.ms(0.5),
            latency.ms(0.99),
            if unseen > 0 {
                format!(" ({unseen} never seen)")
            } else {
                String::new()
            }
        ));
        report.row(
            Row::new(
                format!("freshness {}, command 200 to visible", target.as_str()),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms",
                    latency.ms(0.5),
                    latency.ms(0.99)
                ),
            )
            .target("p99 < 1000 ms", latency.ms(0.99) < 1000.0 && unseen == 0),
        );
    }
    // After the watchers: rendering the profile blocks this thread for seconds, which would
    // delay the reads the watchers still time.
    crate::profile::finish(report, profile);
    report.command(format!(
        "member-bench freshness: in-process App (every role) over {}, {n} registrations at 50/s, \
         search refresh {} ms, each pending command read from each store through its reader after a fifth of its age \
         (5-100 ms)",
        env.config_file.display(),
        env.settings.search.refresh_ms,
    ));
    report.note(format!(
        "freshness: the watchers' reads by store (each a lookup by identity through the \
         store's reader; an Elasticsearch lookup is two requests): {}; CPU by process while \
         measured: {cpu}",
        reads_by_store.join(", ")
    ));
    if failed > 0 {
        report.note(format!("freshness: {failed} of {n} commands failed"));
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
