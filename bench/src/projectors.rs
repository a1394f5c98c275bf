//! Projectors, live: each target's projector (`member serve projector --target T`, one at a time)
//! consumes the topic the relay benchmark filled into a fresh store; events/s from its consumer
//! group's committed offsets.

use std::time::{Duration, Instant};

use member_infra::kafka::lag::ConsumerGroupLag;
use member_projections::Target;

use crate::isolated::Isolated;
use crate::member_process::MemberProcess;
use crate::report::{rate, Report, Row};

async fn behind(settings: &member_infra::config::Settings, target: Target) -> anyhow::Result<u64> {
    let settings = settings.clone();
    Ok(
        tokio::task::spawn_blocking(move || ConsumerGroupLag::records_behind(&settings, target))
            .await??,
    )
}

/// Returns the MariaDB databases it created (to drop at the end).
pub async fn bench(
    report: &mut Report,
    env: &Isolated,
    member_bin: &std::path::Path,
    topic: &str,
    events: i64,
) -> anyhow::Result<Vec<String>> {
    let databases: Vec<String> = (0..4)
        .map(|i| format!("member_b_{}_p_db_{i}", env.tag))
        .collect();
    // The projectors' own settings: their groups are named after the topic (and, for MySQL,
    // the databases). Until 2026-12-02 the lag was asked of the groups of the run's first topic,
    // which `member run` had long consumed: 0 at the first poll, and rates of 300,000/s and more.
    let mut settings = env.settings.clone();
    settings.kafka.topic = topic.to_owned();
    settings.mysql.databases = databases.clone();
    env.redis_a.flush_all().await?;
    env.redis_b.flush_all().await?;
    for target in Target::ALL {
        let mut envs = env.member_env();
        envs.push(("MEMBER__KAFKA__TOPIC".into(), topic.to_owned()));
        envs.push(("MEMBER__MYSQL__DATABASES".into(), databases.join(",")));
        envs.push((
            "MEMBER__DATA_DIR".into(),
            env.dir.join("projector-data").display().to_string(),
        ));
        let started = Instant::now();
        let projector = MemberProcess::spawn(
            member_bin,
            &["serve", "projector", "--target", target.as_str()],
            &envs,
            &env.dir
                .join(format!("logs/projector-{}.log", target.as_str())),
        )?;
        report.command(projector.command_line.clone());
        let mut first: Option<(Instant, u64)> = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        let outcome = loop {
            // The lag is as of when it was asked (asking takes a broker round trip or more): a
            // start taken after the answer would leave that time out of the rate.
            let asked = Instant::now();
            let left = behind(&settings, target).await?;
            if first.is_none() && left < events as u64 {
                first = Some((asked, left));
            }
            if left == 0 {
                break Ok(Instant::now());
            }
            if Instant::now() > deadline {
                break Err(left);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        projector.stop().await?;
        match outcome {
            Ok(done) => {
                // From the first committed batch on (start-up excluded), unless nearly
                // everything was already done by then (a small topic): then from the start.
                let r = match first {
                    Some((t0, left0)) if left0 >= events as u64 / 10 && done > t0 => {
                        left0 as f64 / done.duration_since(t0).as_secs_f64()
                    }
                    _ => events as f64 / done.duration_since(started).as_secs_f64(),
                };
                report.row(Row::new(
                    format!(
                        "projector {}, live (fresh store, {events} records)",
                        target.as_str()
                    ),
                    format!("{} events", rate(r)),
                ));
            }
            Err(left) => report.row(Row::new(
                format!("projector {}, live", target.as_str()),
                format!("did not finish: {left} of {events} left after 300 s"),
            )),
        }
    }
    Ok(databases)
}
