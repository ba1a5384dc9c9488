//! What a run prints while it runs, beyond a line per finished scenario: colour on a
//! terminal, a `SLOW` line for a scenario past a threshold, and, off a terminal (CI logs),
//! a heartbeat naming what is running, so a long run never looks hung.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always, also into files and pipes.
    Always,
    /// Never.
    Never,
}

/// Colours the status word that starts a report line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Painter {
    enabled: bool,
}

impl Painter {
    /// Decides once for the run: `auto` colours when standard output is a terminal and
    /// `NO_COLOR` is unset or empty (<https://no-color.org>).
    pub fn new(choice: ColorChoice) -> Self {
        let enabled = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
            }
        };
        Self { enabled }
    }

    /// `text` with the leading `PASS`, `FAIL`, `FLAKY`, `RETRY`, `SKIP`, `SLOW` of each line
    /// coloured.
    pub fn paint(&self, text: &str) -> String {
        if !self.enabled {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len() + 16);
        for line in text.split_inclusive('\n') {
            let word = line.split([' ', '\n']).next().unwrap_or_default();
            let style = match word {
                "PASS" => Some(AnsiColor::Green),
                "FAIL" => Some(AnsiColor::Red),
                "FLAKY" | "RETRY" => Some(AnsiColor::Magenta),
                "SKIP" | "SLOW" => Some(AnsiColor::Yellow),
                _ => None,
            };
            match style {
                Some(color) => {
                    let style = Style::new().fg_color(Some(color.into())).bold();
                    out.push_str(&format!("{style}{word}{style:#}{}", &line[word.len()..]));
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// The scenarios running now, and what has been said about them.
#[derive(Debug)]
pub(crate) struct Running {
    /// `path (name)` and when it started, by position in the run.
    started: BTreeMap<usize, (String, Instant, bool)>,
    slow_after: Duration,
    heartbeat_every: Duration,
    last_heartbeat: Instant,
}

impl Running {
    pub fn new(slow_after: Duration, heartbeat_every: Duration) -> Self {
        Self { started: BTreeMap::new(), slow_after, heartbeat_every, last_heartbeat: Instant::now() }
    }

    pub fn start(&mut self, index: usize, label: String) {
        self.started.insert(index, (label, Instant::now(), false));
    }

    pub fn finish(&mut self, index: usize) {
        self.started.remove(&index);
    }

    /// `SLOW` lines for scenarios that passed the threshold since the last call, once each.
    pub fn slow_lines(&mut self) -> String {
        let mut out = String::new();
        for (label, since, said) in self.started.values_mut() {
            if !*said && since.elapsed() >= self.slow_after {
                *said = true;
                out.push_str(&format!("SLOW [> {} s] {label}\n", self.slow_after.as_secs_f64()));
            }
        }
        out
    }

    /// The heartbeat line, when one is due: what runs, for how long, and how far the run is.
    pub fn heartbeat(&mut self, done: usize, total: usize) -> Option<String> {
        if self.started.is_empty() || self.last_heartbeat.elapsed() < self.heartbeat_every {
            return None;
        }
        self.last_heartbeat = Instant::now();
        Some(format!("RUNNING [{done}/{total} done] {}\n", self.names()))
    }

    /// What runs, for the progress line on a terminal.
    pub fn names(&self) -> String {
        let parts: Vec<String> = self
            .started
            .values()
            .map(|(label, since, _)| format!("{label} {:.0} s", since.elapsed().as_secs_f64()))
            .collect();
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_words_are_coloured_and_never_when_disabled() {
        let text = "PASS a (x, 1 ms)\nFAIL b (y, 2 ms)\n     step 1 `start`\n";
        assert_eq!(Painter { enabled: false }.paint(text), text);
        let painted = Painter { enabled: true }.paint(text);
        assert!(painted.starts_with("\u{1b}[1m\u{1b}[32mPASS\u{1b}[0m a (x, 1 ms)\n"), "{painted:?}");
        assert!(painted.contains("\u{1b}[31mFAIL\u{1b}[0m b"), "{painted:?}");
        assert!(painted.ends_with("     step 1 `start`\n"), "{painted:?}");
    }

    #[test]
    fn a_slow_scenario_is_named_once_and_the_heartbeat_names_what_runs() {
        let mut running = Running::new(Duration::ZERO, Duration::ZERO);
        running.start(0, "a.yaml (a)".into());
        assert_eq!(running.slow_lines(), "SLOW [> 0 s] a.yaml (a)\n");
        assert_eq!(running.slow_lines(), "");
        let beat = running.heartbeat(3, 10).unwrap();
        assert!(beat.starts_with("RUNNING [3/10 done] a.yaml (a) "), "{beat}");
        running.finish(0);
        assert_eq!(running.heartbeat(4, 10), None);
    }
}
