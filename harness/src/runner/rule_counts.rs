//! Script rules' `times`, checked once the steps have passed: each rule of a daemon's
//! current script must have fired as often as it says, over every process of the daemon
//! since that script was set. A rule whose fault never fired would otherwise pass its
//! scenario silently.
//!
//! The scripts are the run's own copies (as the scenario gave them, with their lines),
//! never the files under the root, which a step may damage.

use std::collections::BTreeMap;

use mock_nydusd::script::{Script, rule_label};
use serde_json::Value;

use super::outcome::{Failure, StepError};
use super::{Run, target};

/// A daemon's script as last set, and when (on the journals' clock).
#[derive(Debug, Clone)]
pub(crate) struct CurrentScript {
    pub script: Script,
    pub since_ns: u64,
    /// Whether the rules' lines are the scenario file's (not a `script_file`'s).
    pub lines_in_scenario: bool,
}

/// Every daemon's current script.
#[derive(Debug, Default)]
pub(crate) struct Scripts(std::sync::Mutex<BTreeMap<String, CurrentScript>>);

impl Scripts {
    /// `id`'s script is `script` from now on.
    pub fn set(&self, id: &str, script: Script, lines_in_scenario: bool) {
        let since_ns = mock_nydusd::journal::monotonic_ns();
        let current = CurrentScript { script, since_ns, lines_in_scenario };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_owned(), current);
    }

    fn all(&self) -> BTreeMap<String, CurrentScript> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Run<'_> {
    /// The failure of the first rule that fired other than its `times` says, if any.
    pub(super) fn rules_fired_wrongly(&self) -> Option<Failure> {
        if self.config.target != crate::scenario::model::Target::Mock {
            return None;
        }
        for (id, current) in self.scripts.all() {
            if current.script.rules.iter().all(|r| r.value.times.is_none()) {
                continue;
            }
            let entries = target::Target::daemon_entries(&target::Mock, self, Some(&id));
            // From the script's setting, or from when the running daemon took it.
            let after = |e: &Value| e["t_ns"].as_u64().unwrap_or(0) >= current.since_ns;
            let from = entries.iter().position(|e| e["event"] == "script_replaced" && after(e));
            let from = from.unwrap_or_else(|| entries.iter().position(after).unwrap_or(entries.len()));
            let entries = &entries[from..];
            if let Some(failure) = check_script(&id, &current, entries) {
                return Some(failure);
            }
        }
        None
    }
}

/// The first rule of `current` whose firings in `entries` are not what its `times` says.
fn check_script(id: &str, current: &CurrentScript, entries: &[Value]) -> Option<Failure> {
    for (index, rule) in current.script.rules.iter().enumerate() {
        let Some(times) = rule.value.times else { continue };
        let fired: Vec<&Value> = entries.iter().filter(|e| e["event"] == "script" && e["rule"] == index + 1).collect();
        let count = fired.len() as u64;
        if times.allows(count) {
            continue;
        }
        let label = rule_label(index, rule.value.name.as_deref());
        let why = match fired.last() {
            // Too often: where it last fired says more than what came closest.
            Some(last) if count > 0 => {
                format!("last on {} {}", last["method"].as_str().unwrap_or("?"), last["path"].as_str().unwrap_or("?"))
            }
            _ => closest(&rule.value.when, entries),
        };
        let line = if current.lines_in_scenario { rule.referenced.line() } else { 0 };
        let error = StepError::mismatch(
            format!("script {label} of {id} fired {count} time{}", if count == 1 { "" } else { "s" }),
            format!("{label} fired {times}"),
            format!("{count}; {why}"),
        );
        return Some(Failure::at_step(0, line, "times", error));
    }
    None
}

/// The request of `entries` that came closest to `when` (method, path, query), and what
/// of it differed; how a rule that did not fire is explained.
fn closest(when: &mock_nydusd::script::When, entries: &[Value]) -> String {
    let text = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let differs = |e: &Value| -> Vec<&'static str> {
        let mut wrong = Vec::new();
        if when.method.is_some_and(|m| m.as_str() != text(e, "method")) {
            wrong.push("method");
        }
        if when.path.as_deref().is_some_and(|p| p != "*" && p != text(e, "path")) {
            wrong.push("path");
        }
        if !when.query_holds(&text(e, "query")) {
            wrong.push("query");
        }
        wrong
    };
    let requests = entries.iter().filter(|e| e["event"] == "request" || e["event"] == "script");
    let Some((best, wrong)) = requests.map(|e| (e, differs(e))).min_by_key(|(_, wrong)| wrong.len()) else {
        return "the daemon had no request since the script was set".to_owned();
    };
    let query = text(best, "query");
    let target = if query.is_empty() { text(best, "path") } else { format!("{}?{query}", text(best, "path")) };
    let why = if wrong.is_empty() {
        "it matched method, path and query; a condition of state, time, process, body or call did not hold, or an earlier rule took it".to_owned()
    } else {
        format!("{} differed", wrong.join(", "))
    };
    format!("closest request: {} {target} ({why})", text(best, "method"))
}
