//! wrk, the HTTP load generator of the closed-loop measurements (written in C, like pgbench, so
//! the generator takes as little of the two cores as the baselines' own generators do): one run
//! and the parse of its `--latency` report.

use std::path::Path;

use anyhow::Context;

use crate::report::Report;

pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub errors: u64,
}

impl WrkResult {
    pub fn summary(&self) -> String {
        format!("p50 {:.2} ms, p99 {:.2} ms", self.p50_ms, self.p99_ms)
    }

    /// Non-2xx answers and socket errors (connect, read, write, timeout).
    pub fn failed(&self) -> u64 {
        self.non_2xx + self.errors
    }
}

fn parse_duration_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

pub fn parse(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
        errors: 0,
    };
    for line in text.lines().map(str::trim) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["50%", v] => r.p50_ms = parse_duration_ms(v).context("wrk p50")?,
            ["99%", v] => r.p99_ms = parse_duration_ms(v).context("wrk p99")?,
            ["Requests/sec:", v] => r.rps = v.parse().context("wrk rate")?,
            ["Non-2xx", "or", "3xx", "responses:", v] => r.non_2xx = v.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors = rest
                    .iter()
                    .filter_map(|f| f.trim_end_matches(',').parse::<u64>().ok())
                    .sum()
            }
            _ => {}
        }
    }
    anyhow::ensure!(r.rps > 0.0, "no rate in wrk output: {text}");
    Ok(r)
}

/// Runs `wrk -t2 -c<connections> -d<seconds>s --latency -s <script> <url>` with `env` set (the
/// scripts read their inputs from the environment) and records the command line.
pub fn run(
    url: &str,
    script: &Path,
    connections: usize,
    seconds: u64,
    env: &[(&str, String)],
    report: &mut Report,
) -> anyhow::Result<WrkResult> {
    let args = [
        "-t2".to_owned(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        url.to_owned(),
    ];
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    report.command(format!("{} wrk {}", shown.join(" "), args.join(" ")));
    let out = std::process::Command::new("wrk")
        .args(&args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .context("running wrk (scripts/bench.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_and_rate() {
        let text = "  Latency Distribution\n     50%  635.00us\n     75%    1.00ms\n     99%    2.50ms\n\
                    Non-2xx or 3xx responses: 3\nSocket errors: connect 0, read 2, write 0, timeout 1\n\
                    Requests/sec:  77000.12\n";
        let r = parse(text).unwrap();
        assert!((r.p50_ms - 0.635).abs() < 1e-9);
        assert!((r.p99_ms - 2.5).abs() < 1e-9);
        assert_eq!((r.non_2xx, r.errors, r.failed()), (3, 3, 6));
        assert!((r.rps - 77000.12).abs() < 1e-9);
    }

    #[test]
    fn a_report_without_a_rate_is_an_error() {
        assert!(parse("  Latency Distribution\n     50%  635.00us\n").is_err());
    }
}
