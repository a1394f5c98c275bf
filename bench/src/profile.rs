//! Flame graphs of a measured step (`BENCH_PROFILE=1 make bench`), so a missed target comes with
//! its profile and the bottleneck it names, reproducibly rather than from a `perf` session by hand.
//!
//! Two recorders run for exactly the step:
//! - `perf record -a` with DWARF call graphs: every process on the machine (`member`, PostgreSQL,
//!   MariaDB, Redis, the load generators, the kernel), so shares are of the whole machine. A
//!   JVM's compiled Java code has no symbols for perf, which is why:
//! - async-profiler inside each JVM of the stack (the Elasticsearch clusters, Kafka), loaded
//!   through `jcmd JVMTI.agent_load`: Java frames, the JIT compilers and the garbage collector.
//!
//! Each step's directory gets the folded stacks and one SVG per recorder (rendered by inferno;
//! perf's raw data is deleted once folded), and the report gets one note naming where the time
//! went. Profiling costs CPU (perf
//! unwinds stacks by copying them), so a profiled run's figures are not comparable with an
//! unprofiled run's; the note says so.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::report::Report;

/// Where profiles go (set by scripts/bench.sh when `BENCH_PROFILE=1`); unset: no profiling.
pub const DIR_ENV: &str = "BENCH_PROFILE_DIR";
/// async-profiler's `libasyncProfiler.so` (fetched from Maven Central by scripts/bench.sh); unset:
/// the JVMs appear in perf's graph only.
pub const AGENT_ENV: &str = "BENCH_ASYNC_PROFILER";
/// The `jcmd` of the JDK the stack's JVMs run on (scripts/bench.sh); unset: `jcmd` on the PATH.
pub const JCMD_ENV: &str = "BENCH_JCMD";

/// About this many stacks per step whatever its length: perf copies 16 KiB of stack per sample,
/// and `perf script` unwinds each one afterwards.
const SAMPLES_PER_STEP: f64 = 8_000.0;

/// A JVM below this share of the machine's busy samples is left out of the note.
const MIN_NOTED_SHARE: f64 = 0.02;

/// A recording in progress; [`finish`] ends it.
pub struct Recording {
    name: String,
    dir: PathBuf,
    perf: Child,
    frequency: u32,
    jvms: Vec<Jvm>,
    agent: Option<PathBuf>,
    labels: HashMap<u32, String>,
    started: Instant,
}

struct Jvm {
    pid: u32,
    label: String,
}

/// Starts profiling the step `name`, expected to last about `expected`, when profiling is on.
/// A recorder that cannot start is reported and the step runs unprofiled.
pub fn start(report: &mut Report, name: &str, expected: Duration) -> Option<Recording> {
    let base = std::env::var_os(DIR_ENV)?;
    match Recording::start(Path::new(&base), name, expected) {
        Ok(recording) => Some(recording),
        Err(err) => {
            report.note(format!("profile of {name}: not recorded: {err:#}"));
            None
        }
    }
}

/// Ends `recording` (if any), renders its flame graphs and notes where the time went.
pub fn finish(report: &mut Report, recording: Option<Recording>) {
    let Some(recording) = recording else { return };
    let name = recording.name.clone();
    match recording.finish() {
        Ok(note) => report.note(note),
        Err(err) => report.note(format!("profile of {name}: failed: {err:#}")),
    }
}

impl Recording {
    fn start(base: &Path, name: &str, expected: Duration) -> anyhow::Result<Self> {
        let dir = base.join(slug(name));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let frequency =
            (SAMPLES_PER_STEP / (cores * expected.as_secs_f64().max(1.0))).clamp(9.0, 499.0) as u32;
        // The agents first: each `jcmd` is a JVM of its own, whose start-up would otherwise be
        // in perf's samples.
        let agent = std::env::var_os(AGENT_ENV).map(PathBuf::from);
        let mut profiled = Vec::new();
        if let Some(agent) = &agent {
            for (pid, label) in jvms() {
                // A JVM that refuses the agent is left to perf's graph.
                if jcmd_agent(pid, agent, "start,event=cpu,interval=10ms").is_ok() {
                    profiled.push(Jvm { pid, label });
                }
            }
        }
        let stop_agents = |jvms: &[Jvm]| {
            if let Some(agent) = &agent {
                for jvm in jvms {
                    let _ = jcmd_agent(jvm.pid, agent, "stop");
                }
            }
        };
        let data = dir.join("perf.data");
        let _ = std::fs::remove_file(&data);
        let log = std::fs::File::create(dir.join("perf.log"))?;
        let perf = Command::new("perf")
            .args(["record", "-a", "-F", &frequency.to_string()])
            .args(["--call-graph", "dwarf,16384", "-o"])
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn();
        let perf = match perf {
            Ok(perf) => perf,
            Err(err) => {
                stop_agents(&profiled);
                return Err(anyhow::Error::new(err)
                    .context("starting `perf record` (linux-perf; scripts/bench.sh installs it)"));
            }
        };
        let mut recording = Self {
            name: name.to_owned(),
            dir,
            perf,
            frequency,
            jvms: profiled,
            agent: agent.clone(),
            labels: process_labels(),
            started: Instant::now(),
        };
        // perf writes its header once it has opened every CPU's buffer: from then on it samples.
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::fs::metadata(&data).map_or(0, |m| m.len()) == 0 {
            let failed = match recording.perf.try_wait()? {
                Some(status) => Some(format!("`perf record` exited with {status} (see perf.log)")),
                None if Instant::now() >= deadline => {
                    let _ = recording.perf.kill();
                    Some("`perf record` did not start in 15 s".to_owned())
                }
                None => None,
            };
            if let Some(failed) = failed {
                stop_agents(&recording.jvms);
                anyhow::bail!(failed);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        recording.started = Instant::now();
        Ok(recording)
    }

    fn finish(mut self) -> anyhow::Result<String> {
        let wall = self.started.elapsed();
        // SIGINT: perf stops sampling and writes its data out.
        let _ = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        self.perf.wait().context("waiting for `perf record`")?;
        let mut java = Vec::new();
        if let Some(agent) = &self.agent {
            for jvm in &self.jvms {
                let file = self.dir.join(format!("{}.collapsed", slug(&jvm.label)));
                let stop = format!("stop,file={}", file.display());
                if jcmd_agent(jvm.pid, agent, &stop).is_ok() && file.exists() {
                    java.push((jvm.label.clone(), file));
                }
            }
        }
        // Stopped (or refusing): nothing left for `drop` to stop.
        self.jvms.clear();
        // Compiled Java code has no symbols for perf: each JVM writes its code map
        // (/tmp/perf-<pid>.map), which `perf script` reads.
        let maps: Vec<PathBuf> = jvms()
            .into_iter()
            .filter(|(pid, _)| {
                Command::new(jcmd())
                    .args([&pid.to_string(), "Compiler.perfmap"])
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|(pid, _)| PathBuf::from(format!("/tmp/perf-{pid}.map")))
            .collect();
        // Processes that started during the step (the relay, `member rebuild`, backends).
        for (pid, label) in process_labels() {
            self.labels.entry(pid).or_insert(label);
        }
        let folded = self.fold_perf();
        for map in maps {
            let _ = std::fs::remove_file(map);
        }
        let folded = folded?;
        // The raw data is about 16 KiB per sample (100+ MB a step); the folded stacks keep what
        // the graphs need.
        let _ = std::fs::remove_file(self.dir.join("perf.data"));
        std::fs::write(self.dir.join("perf.collapsed"), folded.join("\n"))?;
        let title = format!(
            "{}: every process (perf -a, {} Hz)",
            self.name, self.frequency
        );
        render(&folded, &title, &self.dir.join("perf.svg"))?;
        let machine = Stacks::new(&folded, |root| root != "idle");
        let idle = Stacks::new(&folded, |_| true).share(|root| root == "idle");
        let mut note = format!(
            "profile of {} ({:.0} s, perf -a at {} Hz, {:.0}% idle; flame graphs in `{}`): busy samples by process: {}; hottest functions: {}; `member` by its innermost own function: {}",
            self.name,
            wall.as_secs_f64(),
            self.frequency,
            100.0 * idle,
            relative(&self.dir).display(),
            machine.top(Stacks::root, 6),
            machine.top(Stacks::leaf, 8),
            Stacks::new(&folded, |root| root == "member").top(|s| Stacks::innermost(s, |f| f.starts_with("member_")), 6),
        );
        for (label, file) in java {
            let lines: Vec<String> = std::fs::read_to_string(&file)?
                .lines()
                .map(str::to_owned)
                .collect();
            if lines.is_empty() {
                // An idle JVM (the shared broker while the benchmark uses its own).
                continue;
            }
            let svg = file.with_extension("svg");
            render(
                &lines,
                &format!("{}: {label} (async-profiler, cpu)", self.name),
                &svg,
            )?;
            // Its flame graph is kept; the note names only JVMs with at least 2% of the busy
            // samples.
            let share = machine.share(|root| root == label);
            if share < MIN_NOTED_SHARE {
                continue;
            }
            let stacks = Stacks::new(&lines, |_| true);
            note.push_str(&format!(
                "; {label} ({:.0}% of busy samples; async-profiler, {} samples): {}",
                100.0 * share,
                stacks.total,
                stacks.top(Stacks::java_work, 5)
            ));
        }
        note.push_str(" (a profiled run's figures are not comparable with an unprofiled run's)");
        Ok(note)
    }

    /// perf's samples as folded stacks, the root frame being the process's label rather than
    /// the thread's name.
    fn fold_perf(&self) -> anyhow::Result<Vec<String>> {
        use inferno::collapse::Collapse as _;
        let script = Command::new("perf")
            .args(["script", "-F", "+pid", "--no-inline", "-i"])
            .arg(self.dir.join("perf.data"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running `perf script`")?;
        anyhow::ensure!(
            script.status.success(),
            "`perf script` failed: {}",
            script.status
        );
        let mut options = inferno::collapse::perf::Options::default();
        options.include_tid = true;
        let mut folded = Vec::new();
        inferno::collapse::perf::Folder::from(options)
            .collapse(&script.stdout[..], &mut folded)
            .context("folding perf's stacks")?;
        Ok(relabel(&String::from_utf8_lossy(&folded), &self.labels))
    }
}

impl Drop for Recording {
    /// A step that failed between `start` and `finish` must not leave perf sampling the machine,
    /// nor the agents sampling their JVMs, after the benchmark is gone.
    fn drop(&mut self) {
        if matches!(self.perf.try_wait(), Ok(None)) {
            let _ = self.perf.kill();
            let _ = self.perf.wait();
        }
        if let Some(agent) = &self.agent {
            for jvm in &self.jvms {
                let _ = jcmd_agent(jvm.pid, agent, "stop");
            }
        }
    }
}

/// One line of perf's folded stacks: `comm-PID/TID;rest count`.
struct Folded<'a> {
    comm: &'a str,
    pid: Option<u32>,
    tid: Option<u32>,
    rest: &'a str,
    count: u64,
}

/// Folded `comm-PID/TID;frames count` lines with the process's label as the root frame ("idle"
/// for the idle task), identical stacks merged, sorted as inferno expects. A process that
/// started and ended within the step is named by its main thread's name (TID = PID), not by
/// the name of the thread sampled.
fn relabel(folded: &str, labels: &HashMap<u32, String>) -> Vec<String> {
    let parsed: Vec<Folded> = folded
        .lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let (root, rest) = stack.split_once(';').unwrap_or((stack, ""));
            let (comm, ids) = root.rsplit_once('-').unwrap_or((root, ""));
            let (pid, tid) = ids.split_once('/').unwrap_or((ids, ""));
            Some(Folded {
                comm,
                pid: pid.parse().ok(),
                tid: tid.parse().ok(),
                rest,
                count: count.parse().ok()?,
            })
        })
        .collect();
    let main_threads: HashMap<u32, &str> = parsed
        .iter()
        .filter(|f| f.pid.is_some() && f.pid == f.tid)
        .filter_map(|f| Some((f.pid?, f.comm)))
        .collect();
    let mut merged: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for f in parsed {
        let label = match f.pid {
            Some(0) => "idle".to_owned(),
            Some(pid) => labels
                .get(&pid)
                .cloned()
                .or_else(|| main_threads.get(&pid).map(|c| (*c).to_owned()))
                .unwrap_or_else(|| f.comm.to_owned()),
            None => f.comm.to_owned(),
        };
        let stack = if f.rest.is_empty() {
            label
        } else {
            format!("{label};{}", f.rest)
        };
        *merged.entry(stack).or_default() += f.count;
    }
    merged
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// Folded stacks: frames and a sample count per line.
struct Stacks {
    stacks: Vec<(Vec<String>, u64)>,
    total: u64,
}

impl Stacks {
    fn new(lines: &[String], keep: impl Fn(&str) -> bool) -> Self {
        let stacks: Vec<(Vec<String>, u64)> = lines
            .iter()
            .filter_map(|line| {
                let (frames, count) = line.rsplit_once(' ')?;
                let frames: Vec<String> = frames.split(';').map(str::to_owned).collect();
                Some((frames, count.trim().parse().ok()?))
            })
            .filter(|(frames, _)| keep(&frames[0]))
            .collect();
        let total = stacks.iter().map(|(_, n)| n).sum();
        Self { stacks, total }
    }

    /// The share of samples whose root frame passes `pick`.
    fn share(&self, pick: impl Fn(&str) -> bool) -> f64 {
        let n: u64 = self
            .stacks
            .iter()
            .filter(|(f, _)| pick(&f[0]))
            .map(|(_, n)| n)
            .sum();
        n as f64 / self.total.max(1) as f64
    }

    /// The `n` largest groups of samples by `key`: "key 12.3%, ...".
    fn top(&self, key: impl Fn(&[String]) -> String, n: usize) -> String {
        let mut groups: HashMap<String, u64> = HashMap::new();
        for (frames, count) in &self.stacks {
            *groups.entry(key(frames)).or_default() += count;
        }
        let mut groups: Vec<(String, u64)> = groups.into_iter().collect();
        groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if groups.is_empty() {
            return "no samples".to_owned();
        }
        groups
            .iter()
            .take(n)
            .map(|(k, c)| format!("{k} {:.1}%", 100.0 * *c as f64 / self.total.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn root(frames: &[String]) -> String {
        frames[0].clone()
    }

    /// "process: leaf function".
    fn leaf(frames: &[String]) -> String {
        format!("{}: {}", frames[0], short(&frames[frames.len() - 1]))
    }

    /// The innermost frame that passes `own`, or "elsewhere" when none does.
    fn innermost(frames: &[String], own: impl Fn(&str) -> bool) -> String {
        frames
            .iter()
            .rev()
            .find(|f| own(f))
            .map_or_else(|| "no member frame".to_owned(), |f| short(f))
    }

    /// What a JVM sample was doing: compiling (the JIT), collecting garbage, or the innermost
    /// Elasticsearch, Lucene or Kafka method.
    fn java_work(frames: &[String]) -> String {
        let any = |needle: &str| frames.iter().any(|f| f.contains(needle));
        if any("CompileBroker::") {
            return "JIT compiler".to_owned();
        }
        if any("G1") || any("GCTaskThread") || any("ConcurrentGCThread") {
            return "garbage collector".to_owned();
        }
        frames
            .iter()
            .rev()
            .find(|f| {
                f.starts_with("org/elasticsearch")
                    || f.starts_with("org/apache/lucene")
                    || f.starts_with("kafka/")
                    || f.starts_with("org/apache/kafka")
            })
            .map_or_else(|| short(&frames[frames.len() - 1]), |f| short(f))
    }
}

/// A frame without its Rust hash, generic arguments or Java package, so notes stay readable.
fn short(frame: &str) -> String {
    let frame = frame.trim_end_matches("_[j]").trim_end_matches("_[k]");
    let frame = match frame.rfind("::h") {
        Some(i) if frame[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) => &frame[..i],
        _ => frame,
    };
    if frame.contains('/') && !frame.contains("::") {
        // Java: org/apache/lucene/index/IndexWriter.updateDocuments -> IndexWriter.updateDocuments
        return frame.rsplit('/').next().unwrap_or(frame).to_owned();
    }
    let mut out = String::with_capacity(frame.len());
    let mut depth = 0;
    for c in frame.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `path` relative to the working directory (the clone, under `make bench`), as the section
/// in docs/benchmarks.md should show it.
fn relative(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

fn slug(name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    slug.trim_matches('-').to_owned()
}

fn render(folded: &[String], title: &str, svg: &Path) -> anyhow::Result<()> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_owned();
    options.count_name = "samples".to_owned();
    let file = std::fs::File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
    let mut out = std::io::BufWriter::new(file);
    inferno::flamegraph::from_lines(&mut options, folded.iter().map(String::as_str), &mut out)
        .with_context(|| format!("rendering {}", svg.display()))?;
    out.flush()?;
    Ok(())
}

/// Every process's label by pid, as in [`crate::cpu`], JVMs named by the service they run.
fn process_labels() -> HashMap<u32, String> {
    let mut labels = HashMap::new();
    for pid in crate::cpu::pids() {
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        let label = if comm == "java" {
            jvm_label(pid).unwrap_or_else(|| "java".to_owned())
        } else {
            comm.to_owned()
        };
        labels.insert(pid, label);
    }
    labels
}

/// The stack's JVMs: an Elasticsearch node by its `-Dmember.service`, a Kafka broker as "kafka".
fn jvm_label(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if let Some(service) = args
        .iter()
        .find_map(|a| a.strip_prefix("-Dmember.service="))
    {
        return Some(format!("elasticsearch {service}"));
    }
    args.iter()
        .any(|a| a == "kafka.Kafka")
        .then(|| format!("kafka pid {pid}"))
}

fn jvms() -> Vec<(u32, String)> {
    let mut jvms: Vec<(u32, String)> = process_labels()
        .into_iter()
        .filter(|(_, label)| label.starts_with("elasticsearch ") || label.starts_with("kafka "))
        .collect();
    jvms.sort();
    jvms
}

fn jcmd() -> std::ffi::OsString {
    std::env::var_os(JCMD_ENV).unwrap_or_else(|| "jcmd".into())
}

/// Loads async-profiler into `pid` with `command` (`jcmd` parses unquoted `a=b` as its own
/// option, hence the quotes).
fn jcmd_agent(pid: u32, agent: &Path, command: &str) -> anyhow::Result<()> {
    let out = Command::new(jcmd())
        .arg(pid.to_string())
        .arg("JVMTI.agent_load")
        .arg(agent)
        .arg(format!("\"{command}\""))
        .stdin(Stdio::null())
        .output()
        .context("running jcmd")?;
    let said = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && said.lines().any(|l| l.trim() == "return code: 0"),
        "jcmd {pid}: {}",
        said.trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perf_root_becomes_its_process_label() {
        let labels = HashMap::from([(42, "member".to_owned())]);
        let folded = "tokio-runtime-w-42/43;main;member_api::run 7\n\
                      member-42/42;main;member_api::run 1\n\
                      swapper-0/0;do_idle 3\n\
                      postgres-77/77;ExecInsert 2\n\
                      tokio-rt-worker-90/91;member_api::tools::rebuild 5\n\
                      member-90/90;main 1\n\
                      kworker/1:1H-kblockd-12/12 4";
        assert_eq!(
            relabel(folded, &labels),
            vec![
                // Two threads of one process, one stack: merged.
                "idle;do_idle 3",
                "kworker/1:1H-kblockd 4",
                "member;main 1",
                "member;main;member_api::run 8",
                // A process gone before the step ended: named by its main thread.
                "member;member_api::tools::rebuild 5",
                "postgres;ExecInsert 2",
            ]
        );
    }

    #[test]
    fn shares_group_samples_by_the_innermost_own_frame() {
        let lines = vec![
            "member;tokio::run;member_infra::relay::fold;memcpy 3".to_owned(),
            "member;tokio::run;member_api::serve;member_infra::relay::fold;malloc 1".to_owned(),
            "member;tokio::run;epoll_wait 4".to_owned(),
            "idle;do_idle 10".to_owned(),
        ];
        let member = Stacks::new(&lines, |root| root == "member");
        assert_eq!(member.total, 8);
        assert_eq!(
            member.top(|s| Stacks::innermost(s, |f| f.starts_with("member_")), 2),
            "member_infra::relay::fold 50.0%, no member frame 50.0%"
        );
        let all = Stacks::new(&lines, |_| true);
        assert!((all.share(|root| root == "idle") - 10.0 / 18.0).abs() < 1e-9);
    }

    #[test]
    fn java_samples_are_named_by_their_work() {
        let jit = [
            "Thread::call_run",
            "CompileBroker::compiler_thread_loop",
            "Compile::Optimize",
        ]
        .map(String::from);
        assert_eq!(Stacks::java_work(&jit), "JIT compiler");
        let index = [
            "java/lang/Thread.run",
            "org/elasticsearch/index/engine/InternalEngine.index",
            "org/apache/lucene/index/IndexWriter.updateDocuments",
            "java/util/Arrays.fill",
        ]
        .map(String::from);
        assert_eq!(Stacks::java_work(&index), "IndexWriter.updateDocuments");
    }

    #[test]
    fn frames_lose_hashes_and_generics() {
        assert_eq!(
            short("member_infra::relay::Folds<K>::get::h0123456789abcdef"),
            "member_infra::relay::Folds::get"
        );
        assert_eq!(
            slug("bind commands, 16 clients (alone)"),
            "bind-commands-16-clients-alone"
        );
    }
}
