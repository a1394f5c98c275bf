//! The dated section appended to docs/benchmarks.md: machine facts, what else ran, the exact
//! commands, and one table row per measure (result, same-run baseline, ratio, target, pass).

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;

#[derive(Debug, Clone)]
pub struct Row {
    pub measure: String,
    pub result: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub target: String,
    pub pass: Option<bool>,
}

impl Row {
    pub fn new(measure: impl Into<String>, result: impl Into<String>) -> Self {
        Self {
            measure: measure.into(),
            result: result.into(),
            baseline: "-".into(),
            ratio: None,
            target: "-".into(),
            pass: None,
        }
    }

    pub fn baseline(mut self, baseline: impl Into<String>, ratio: f64) -> Self {
        self.baseline = baseline.into();
        self.ratio = Some(ratio);
        self
    }

    pub fn target(mut self, target: impl Into<String>, pass: bool) -> Self {
        self.target = target.into();
        self.pass = Some(pass);
        self
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub commands: Vec<String>,
    pub notes: Vec<String>,
    /// A drill's figures as one JSON object, printed as the last line of its output.
    pub figures: Option<String>,
}

impl Report {
    pub fn row(&mut self, row: Row) {
        eprintln!(
            "[bench] {} | {} | {} | {} | {} | {}",
            row.measure,
            row.result,
            row.baseline,
            row.ratio.map(|r| format!("{r:.2}")).unwrap_or("-".into()),
            row.target,
            pass_text(row.pass)
        );
        self.rows.push(row);
    }

    pub fn command(&mut self, command: impl Into<String>) {
        self.commands.push(command.into());
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        eprintln!("[bench] note: {note}");
        self.notes.push(note);
    }

    pub fn markdown(&self, title: &str, facts: Option<&str>) -> String {
        let mut md = format!("\n## {title}\n\n");
        if let Some(facts) = facts {
            md.push_str(facts.trim_end());
            md.push_str("\n\n");
        }
        md.push_str("| measure | result | baseline (same run) | ratio | target | pass |\n");
        md.push_str("|---|---|---|---|---|---|\n");
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r.measure,
                r.result,
                r.baseline,
                r.ratio.map(|r| format!("{r:.2}")).unwrap_or("-".into()),
                r.target,
                pass_text(r.pass)
            ));
        }
        if !self.notes.is_empty() {
            md.push_str("\nNotes:\n\n");
            for n in &self.notes {
                md.push_str(&format!("- {n}\n"));
            }
        }
        md.push_str("\nCommands (as run):\n\n```\n");
        for c in &self.commands {
            md.push_str(c);
            md.push('\n');
        }
        md.push_str("```\n");
        md
    }

    /// Ends a run: notes an early stop (`what` names the run), dates `title`, appends the
    /// section to the common document, and hands the run's outcome back.
    pub fn conclude<T>(
        mut self,
        common: &crate::Common,
        what: &str,
        title: &str,
        outcome: anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Err(e) = &outcome {
            self.note(format!("the {what} stopped early: {e:#}"));
        }
        let title = format!(
            "{} {title}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        self.append(&common.doc, &title, common.facts.as_deref())?;
        outcome
    }

    /// Appends the section to `doc` (created with a heading when missing).
    pub fn append(&self, doc: &Path, title: &str, facts: Option<&Path>) -> anyhow::Result<()> {
        let facts = facts
            .map(std::fs::read_to_string)
            .transpose()
            .context("reading the machine facts")?;
        let new = !doc.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(doc)
            .with_context(|| format!("opening {}", doc.display()))?;
        if new {
            writeln!(f, "# Benchmarks\n\nDated sections appended by `make bench` and `make drill`; how we measure: docs/decisions/0011-benchmarks-with-same-run-baselines.md.")?;
        }
        f.write_all(self.markdown(title, facts.as_deref()).as_bytes())?;
        Ok(())
    }
}

fn pass_text(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "-",
    }
}

pub fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.0}/s", v)
    } else {
        format!("{v:.1}/s")
    }
}
