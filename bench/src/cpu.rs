//! Where the cores went during a step: CPU time by process, read from `/proc`, so that a target
//! missed on this 2-core machine comes with the measured share of each server beside it.
//!
//! A process's total is its own time plus that of the children it reaped (`cutime`, `cstime`):
//! PostgreSQL's per-connection backends end during a step and their time moves into the
//! postmaster's, so the group "postgres" keeps it. This process's own children (the `member`
//! tool it waits for, wrk, pgbench) are reported as one group.

use std::collections::{BTreeMap, HashMap};

/// The kernel's clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux whatever
/// the kernel's own tick rate).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU ticks of every process at one moment.
pub struct Snapshot {
    ticks: HashMap<u32, (String, u64)>,
    children: u64,
    taken: std::time::Instant,
}

/// The label of a process: its command name, Java processes told apart by what they run.
fn label(pid: u32, comm: &str) -> String {
    if comm != "java" {
        return comm.to_owned();
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if cmdline.contains("elasticsearch") {
        "java (elasticsearch)".to_owned()
    } else if cmdline.contains("kafka") {
        "java (kafka)".to_owned()
    } else {
        "java".to_owned()
    }
}

/// (command name, own ticks, reaped children's ticks) of one `/proc/<pid>/stat`.
fn parse(stat: &str) -> Option<(String, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    // Fields after the command name, from field 3 (state): utime is field 14, stime 15, cutime
    // 16, cstime 17 (proc(5)).
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let n = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((comm, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// The pids of every process now running (the numeric entries of `/proc`).
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn snapshot() -> Snapshot {
    let mut ticks = HashMap::new();
    let me = std::process::id();
    let mut children = 0;
    for pid in pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((comm, own, reaped)) = parse(&stat) else {
            continue;
        };
        if pid == me {
            children = reaped;
            ticks.insert(pid, (comm, own));
        } else {
            ticks.insert(pid, (label(pid, &comm), own + reaped));
        }
    }
    Snapshot {
        ticks,
        children,
        taken: std::time::Instant::now(),
    }
}

impl Snapshot {
    /// CPU seconds by label since `self`, largest first (labels under half a second left out).
    pub fn since(&self) -> Split {
        let now = snapshot();
        let mut by_label: BTreeMap<String, i64> = BTreeMap::new();
        for (pid, (label, ticks)) in &now.ticks {
            // By pid alone: a kernel worker's name changes with its work item.
            let before = self.ticks.get(pid).map_or(0, |(_, t)| *t);
            *by_label.entry(label.clone()).or_default() += *ticks as i64 - before as i64;
        }
        *by_label.entry(CHILDREN.to_owned()).or_default() +=
            now.children as i64 - self.children as i64;
        let mut rows: Vec<(String, f64)> = by_label
            .into_iter()
            .map(|(label, ticks)| (label, ticks as f64 / TICKS_PER_SECOND))
            .filter(|(_, seconds)| *seconds >= 0.5)
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        Split {
            wall: now.taken.duration_since(self.taken).as_secs_f64(),
            rows,
        }
    }
}

/// The label of this process's reaped children.
pub const CHILDREN: &str = "member-bench's children (member tools, wrk, pgbench)";

/// CPU seconds by process label over a step.
pub struct Split {
    pub wall: f64,
    pub rows: Vec<(String, f64)>,
}

impl Split {
    /// CPU seconds of `label` (0 when it used less than half a second).
    pub fn seconds(&self, label: &str) -> f64 {
        self.rows
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0.0, |(_, s)| *s)
    }
}

/// "30 s of wall time x 2 cores = 60 CPU s: postgres 20 s (33%), ..."
impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = self.wall * cores;
        write!(
            f,
            "{:.1} s of wall time x {cores:.0} cores = {capacity:.0} CPU s:",
            self.wall
        )?;
        for (i, (label, s)) in self.rows.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{label} {s:.1} s ({:.0}%)", 100.0 * s / capacity)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_is_read_from_its_last_parenthesis() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 50 7 3 20 0 1 0 100 1000 10";
        assert_eq!(parse(stat), Some(("my (odd) name".to_owned(), 300, 10)));
    }

    #[test]
    fn this_process_is_found_with_a_plausible_time() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (comm, own, _) = parse(&stat).expect("parsed");
        assert!(!comm.is_empty());
        assert!(own < 100 * 3600 * 24, "{own} ticks");
    }
}
