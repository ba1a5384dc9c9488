//! Script rules' `times`, checked once the steps have passed: each rule of a daemon's
//! script (as last set) must have fired as often as it says, over every process of the
//! daemon. A rule whose fault never fired would otherwise pass its scenario silently.

use mock_nydusd::script::{Script, rule_label};
use serde_json::Value;

use super::outcome::{Failure, StepError};
use super::{Run, target};

impl Run<'_> {
    /// The failure of the first rule that fired other than its `times` says, if any.
    pub(super) fn rules_fired_wrongly(&self) -> Option<Failure> {
        if self.config.target != crate::scenario::model::Target::Mock {
            return None;
        }
        for spec in &self.scenario.daemons {
            let id = spec.id.value.as_str();
            let Ok(text) = std::fs::read_to_string(self.root.script_file(id)) else { continue };
            let Ok(script) = Script::parse(&text, "script") else { continue };
            if script.rules.iter().all(|r| r.value.times.is_none()) {
                continue;
            }
            let entries = target::Target::daemon_entries(&target::Mock, self, Some(id));
            // Counters start again with each script the running daemon is given.
            let from = entries.iter().rposition(|e| e["event"] == "script_replaced").map_or(0, |i| i + 1);
            let entries = &entries[from..];
            for (index, rule) in script.rules.iter().enumerate() {
                let Some(times) = rule.value.times else { continue };
                let fired = entries.iter().filter(|e| e["event"] == "script" && e["rule"] == index + 1).count() as u64;
                if times.allows(fired) {
                    continue;
                }
                let label = rule_label(index, rule.value.name.as_deref());
                // The line in the scenario file when the rule was written there.
                let line = spec.script.as_ref().and_then(|s| s.rules.get(index)).map_or(0, |r| r.referenced.line());
                let error = StepError::mismatch(
                    format!("script {label} of {id} fired {fired} time{}", if fired == 1 { "" } else { "s" }),
                    format!("{label} fired {times}"),
                    format!("{fired}; {}", closest(&rule.value.when, entries)),
                );
                return Some(Failure::at_step(0, line, "times", error));
            }
        }
        None
    }
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
    let requests = entries.iter().filter(|e| e["event"] == "request");
    let Some((best, wrong)) = requests.map(|e| (e, differs(e))).min_by_key(|(_, wrong)| wrong.len()) else {
        return "the daemon had no request".to_owned();
    };
    let query = text(best, "query");
    let target = if query.is_empty() { text(best, "path") } else { format!("{}?{query}", text(best, "path")) };
    let why = if wrong.is_empty() {
        "it matched; a condition of state, time, process, body or call did not hold".to_owned()
    } else {
        format!("{} differed", wrong.join(", "))
    };
    format!("closest request: {} {target} ({why})", text(best, "method"))
}
