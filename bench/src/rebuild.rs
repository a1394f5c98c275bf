//! The rebuild benchmark hook: `member seed --members N --bulk`, then
//! `member rebuild --target all`, over an isolated environment, timed. scripts/bench.sh calls it
//! only when the `member` binary has both subcommands (they are being built on other branches).

use std::time::Instant;

use anyhow::Context;

use crate::isolated::{Isolated, Overrides};
use crate::member_process::MemberProcess;
use crate::report::{rate, Report, Row};
use crate::Common;

async fn timed(
    report: &mut Report,
    env: &Isolated,
    bin: &std::path::Path,
    args: &[&str],
    log: &str,
) -> anyhow::Result<f64> {
    timed_output(report, env, bin, args, log)
        .await
        .map(|(s, _)| s)
}

/// Runs `member <args>`, timed; returns the seconds and what it printed on stdout.
async fn timed_output(
    report: &mut Report,
    env: &Isolated,
    bin: &std::path::Path,
    args: &[&str],
    log: &str,
) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let mut p = MemberProcess::spawn(
        bin,
        args,
        &env.member_env(),
        &env.dir.join(format!("logs/{log}.log")),
    )?;
    report.command(p.command_line.clone());
    let status = p.wait().await?;
    anyhow::ensure!(
        status.success(),
        "`member {}` failed ({status}); see {log}.log",
        args.join(" ")
    );
    let stdout =
        std::fs::read_to_string(env.dir.join(format!("logs/{log}.log"))).unwrap_or_default();
    Ok((started.elapsed().as_secs_f64(), stdout))
}

pub async fn run(common: Common, members: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(&common.work_dir)?;
    let bin = std::fs::canonicalize(&common.member_bin).context("the release member binary")?;
    let env = Isolated::create(&common.work_dir, "rebuild", Overrides::default()).await?;
    let mut report = Report::default();
    let n = members.to_string();
    let result = async {
        let seed = timed(
            &mut report,
            &env,
            &bin,
            &["seed", "--members", &n, "--bulk"],
            "seed",
        )
        .await?;
        report.row(Row::new(
            format!("seed --bulk, {members} members"),
            format!("{seed:.0} s ({})", rate(members as f64 / seed)),
        ));
        // About 3,000 members a second on the 2-core machine, for the sampling rate.
        let expected = std::time::Duration::from_secs(members / 3_000 + 10);
        let profile = crate::profile::start(&mut report, "rebuild", expected);
        let cpu = crate::cpu::snapshot();
        let (rebuild, output) = timed_output(
            &mut report,
            &env,
            &bin,
            &["rebuild", "--target", "all", "--json"],
            "rebuild",
        )
        .await?;
        // The rebuild's `member` is this process's child: its time is in the children's group.
        report.note(format!(
            "rebuild: CPU by process (the rebuild's `member` among member-bench's children): {}",
            cpu.since()
        ));
        crate::profile::finish(&mut report, profile);
        // The JSON report is the last thing on stdout (the log also holds stderr).
        let json = output
            .rfind("\n{")
            .map(|i| &output[i + 1..])
            .or_else(|| output.starts_with('{').then_some(output.as_str()))
            .unwrap_or("{}");
        let parsed: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
        if let Some(per_store) = parsed["written_seconds"].as_object() {
            for (store, seconds) in per_store {
                if let Some(seconds) = seconds.as_f64() {
                    report.row(Row::new(
                        format!("rebuild: {store} had every folded document after"),
                        format!("{seconds:.0} s ({})", rate(members as f64 / seconds)),
                    ));
                }
            }
        }
        report.row(
            Row::new(
                format!("rebuild of {members} members into all six stores"),
                format!(
                    "{rebuild:.0} s ({} members)",
                    rate(members as f64 / rebuild)
                ),
            )
            // Issue 24: a rebuild of 1,000,000 members into all six stores, Elasticsearch
            // included, within two minutes.
            .target(
                "< 120 s for 1,000,000",
                members < 1_000_000 || rebuild < 120.0,
            ),
        );
        anyhow::Ok(())
    }
    .await;
    env.drop_databases(&[], &[]).await;
    let title = format!("rebuild benchmark ({members} members)");
    report.conclude(&common, "rebuild benchmark", &title, result)
}
