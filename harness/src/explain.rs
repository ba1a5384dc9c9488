//! `harness explain`: a scenario as a readable sequence, in text or as a Mermaid sequence
//! diagram, so a reviewer can follow a failover reproduction without reading YAML.

use std::fmt::Write;

use crate::scenario::Scenario;

/// The scenario as numbered lines.
pub fn text(scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", scenario.name);
    if !scenario.description.trim().is_empty() {
        let _ = writeln!(out, "  {}", scenario.description.trim().replace('\n', "\n  "));
    }
    if let Some(upstream) = &scenario.upstream {
        let _ = writeln!(out, "  guards against: {upstream}");
    }
    let _ = writeln!(out, "  manager recover policy: {:?}", scenario.manager.recover_policy);
    for d in &scenario.daemons {
        let instances: Vec<&str> = d.instances.iter().map(|i| i.snapshot.value.as_str()).collect();
        let script = d.script.as_ref().map(|s| format!(", scripted ({} rules)", s.rules.len())).unwrap_or_default();
        let _ = writeln!(out, "  daemon {} ({:?}, instances {instances:?}{script})", d.id.value, d.mode);
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        let crate::runner::Explained { from, to, what } = step.value.explain();
        let arrow = if from == to { from } else { format!("{from} → {to}") };
        let _ = writeln!(out, "  {:>2}. {arrow}: {what}", i + 1);
    }
    out
}

/// The scenario as a Mermaid sequence diagram.
pub fn mermaid(scenario: &Scenario) -> String {
    let mut out = String::from("sequenceDiagram\n    participant harness\n    participant manager\n");
    for d in &scenario.daemons {
        let _ = writeln!(out, "    participant {}", d.id.value);
    }
    let _ = writeln!(out, "    Note over harness: {}", scenario.name.replace(':', " "));
    for (i, step) in scenario.steps.iter().enumerate() {
        let crate::runner::Explained { from, to, what } = step.value.explain();
        let what = what.replace(';', ",").replace('#', "");
        if from == to {
            let _ = writeln!(out, "    Note over {from}: {}. {what}", i + 1);
        } else {
            let _ = writeln!(out, "    {from}->>{to}: {}. {what}", i + 1);
        }
    }
    out
}
