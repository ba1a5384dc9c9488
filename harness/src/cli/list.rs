//! `harness list`: what a run would select, and whether each scenario runs on this host
//! for the chosen target, without running anything.

use std::process::ExitCode;

use serde::Serialize;

use super::run::Daemons;
use super::selection::Selection;
use super::{exit_code, say};
use crate::runner::skip_reason;
use crate::scenario::spelled;

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// The target whose skips are shown.
    #[command(flatten)]
    pub daemons: Daemons,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One listed scenario.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    path: String,
    tags: Vec<String>,
    targets: Vec<String>,
    requires: Vec<String>,
    /// Why it would be skipped here; `null` when it runs.
    skip: Option<String>,
}

pub(crate) fn list(args: &ListArgs) -> ExitCode {
    let config = match args.daemons.config(Vec::new()) {
        Ok(c) => c,
        Err(refusal) => return refusal.report(),
    };
    let (selected, broken) = match args.selection.load_all() {
        Ok(loaded) => (loaded.selected, loaded.broken),
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    // A broken file is reported as itself; the others are still listed.
    for e in &broken {
        eprintln!("error: {e}");
    }
    let base = args.selection.base();
    let listed: Vec<Listed> = selected
        .iter()
        .map(|(path, s)| Listed {
            name: s.name.clone(),
            path: path.strip_prefix(&base).unwrap_or(path).display().to_string(),
            tags: s.tags.clone(),
            targets: s.targets.iter().map(spelled).collect(),
            requires: s.requires.iter().map(spelled).collect(),
            skip: skip_reason(s, &config),
        })
        .collect();
    let text = if args.json {
        listed.iter().map(|l| serde_json::to_string(l).unwrap_or_default() + "\n").collect()
    } else {
        table(&listed, &spelled(&config.target))
    };
    say(&text);
    ExitCode::from(if broken.is_empty() { exit_code::OK } else { exit_code::INVALID_SCENARIO })
}

fn table(listed: &[Listed], target: &str) -> String {
    let none = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(",") };
    let rows: Vec<[String; 6]> = listed
        .iter()
        .map(|l| {
            [
                l.path.clone(),
                l.name.clone(),
                none(&l.tags),
                none(&l.targets),
                none(&l.requires),
                l.skip.as_ref().map(|r| format!("skip: {r}")).unwrap_or_else(|| "runs".into()),
            ]
        })
        .collect();
    let header = ["PATH", "NAME", "TAGS", "TARGETS", "REQUIRES", &format!("HERE ({target})")].map(str::to_owned);
    let mut widths = [0; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter().zip(row) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    let runs = listed.iter().filter(|l| l.skip.is_none()).count();
    out.push_str(&format!("{} scenarios, {runs} run here, {} skipped\n", listed.len(), listed.len() - runs));
    out
}
