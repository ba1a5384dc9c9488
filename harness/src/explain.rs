//! `harness explain`: a scenario as numbered text, or as a Mermaid sequence diagram.
//!
//! Each step says who acts on whom and what, and whether it must fail (`expect_error`) or
//! may (`may_fail`), so a step meant to fail never reads as a plain one. The diagram is
//! valid whatever the names: participants get ids of their own (`D1`, …) and show the
//! daemon's id as their label, so ids such as `end`, `alt` or `harness` neither clash with
//! Mermaid's keywords nor merge with the harness, and text is written with Mermaid's
//! entity codes where a character would end or change a statement.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_saphyr::Spanned;

use crate::scenario::Step;
use crate::scenario::model::Scenario;
use crate::scenario::spelled;

/// What a step promises about failing, as `explain` shows it: ` — must fail with …`.
fn outcome_note(step: &Step) -> String {
    if let Some(expected) = step.expected_error() {
        format!(" — must fail: {}", crate::runner::describe_expected(expected))
    } else if step.may_fail() {
        " — may fail (either outcome passes; later steps judge it)".to_owned()
    } else {
        String::new()
    }
}

/// The scenario as a numbered list of steps.
pub fn text(scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", scenario.name);
    if !scenario.description.trim().is_empty() {
        let _ = writeln!(out, "  {}", scenario.description.trim().replace('\n', "\n  "));
    }
    if let Some(upstream) = &scenario.upstream {
        let _ = writeln!(out, "  guards against: {upstream}");
    }
    let _ = writeln!(out, "  manager recover policy: {}", spelled(&scenario.manager.recover_policy));
    for d in &scenario.daemons {
        let instances: Vec<&str> = d.instances.iter().map(|i| i.snapshot.value.as_str()).collect();
        let script = d.script.as_ref().map(|s| format!(", scripted ({} rules)", s.rules.len())).unwrap_or_default();
        let _ = writeln!(out, "  daemon {} ({}, instances {instances:?}{script})", d.id.value, spelled(&d.mode));
    }
    text_steps(&mut out, &scenario.steps, "", 2);
    out
}

/// `steps` numbered after `prefix` (`3.` inside step 3's group), indented by `indent`;
/// a group's lanes follow its line, one level deeper.
fn text_steps(out: &mut String, steps: &[Spanned<Step>], prefix: &str, indent: usize) {
    for (i, step) in steps.iter().enumerate() {
        let crate::runner::Explained { from, to, what } = crate::runner::explain_step(&step.value);
        let arrow = if from == to { from } else { format!("{from} → {to}") };
        let number = format!("{prefix}{}", i + 1);
        let _ = writeln!(out, "{:indent$}{number:>2}. {arrow}: {what}{}", "", outcome_note(&step.value));
        let lanes = step.value.lanes();
        match &step.value {
            Step::Background(_) | Step::Within(_) => text_steps(out, lanes[0], &format!("{number}."), indent + 4),
            _ => {
                for (l, lane) in lanes.iter().enumerate() {
                    let _ = writeln!(out, "{:width$}lane {}:", "", l + 1, width = indent + 4);
                    text_steps(out, lane, &format!("{number}.{}.", l + 1), indent + 6);
                }
            }
        }
    }
}

/// `text` as Mermaid can hold it on one line of a sequence diagram: line breaks become
/// spaces, and the characters that end a statement (`;`), start a comment or an entity
/// (`%`, `#`) or open markup (`<`, `>`) become entity codes (`#59;`).
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ';' | '#' | '%' | '<' | '>' | '{' | '}' | '"' => {
                let _ = write!(out, "#{};", c as u32);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The scenario as a Mermaid sequence diagram.
pub fn mermaid(scenario: &Scenario) -> String {
    // Mermaid ids of our own; the names are only labels.
    let mut ids = BTreeMap::new();
    ids.insert("harness".to_owned(), "H".to_owned());
    ids.insert("manager".to_owned(), "M".to_owned());
    let mut out = String::from("sequenceDiagram\n    participant H as harness\n    participant M as manager\n");
    let mut daemons = BTreeMap::new();
    for (i, d) in scenario.daemons.iter().enumerate() {
        let id = format!("D{}", i + 1);
        let _ = writeln!(out, "    participant {id} as {}", mermaid_text(&format!("daemon {}", d.id.value)));
        daemons.insert(d.id.value.clone(), id);
    }
    // A step names "harness", "manager" or a daemon id; a daemon called `harness` is the
    // daemon only where the step says it is about a daemon.
    let participant = |name: &str, is_daemon: bool| -> String {
        let known = if is_daemon { daemons.get(name) } else { ids.get(name).or_else(|| daemons.get(name)) };
        known.cloned().unwrap_or_else(|| "H".to_owned())
    };
    let _ = writeln!(out, "    Note over H: {}", mermaid_text(&scenario.name));
    let diagram = Diagram { participant: &participant };
    diagram.steps(&mut out, &scenario.steps, "", 0..scenario.steps.len());
    out
}

/// Draws steps: a `background` group as a `par` block beside the steps up to its `join`,
/// `concurrently` as a `par` block of its lanes.
struct Diagram<'a> {
    participant: &'a dyn Fn(&str, bool) -> String,
}

impl Diagram<'_> {
    /// Steps `range` of `steps`, numbered after `prefix`.
    fn steps(&self, out: &mut String, steps: &[Spanned<Step>], prefix: &str, range: std::ops::Range<usize>) {
        let mut i = range.start;
        while i < range.end {
            let step = &steps[i];
            let number = format!("{prefix}{}", i + 1);
            self.step(out, step, &number);
            match &step.value {
                Step::Background(group) => {
                    let name = &group.name.value;
                    let join = steps
                        .iter()
                        .skip(i + 1)
                        .position(|s| matches!(&s.value, Step::Join(j) if j.name.value == *name));
                    let until = join.map_or(steps.len(), |p| i + 1 + p);
                    let _ = writeln!(out, "    par {}", mermaid_text(&format!("background {name}")));
                    self.steps(out, &group.steps, &format!("{number}."), 0..group.steps.len());
                    let _ = writeln!(out, "    and {}", mermaid_text("the steps after it"));
                    if until <= range.end {
                        self.steps(out, steps, prefix, i + 1..until);
                        i = until;
                    } else {
                        // Its join lies beyond the block drawn around this one: blocks nest.
                        let _ = writeln!(out, "    Note over H: {}", mermaid_text(&format!("until join {name}")));
                        i += 1;
                    }
                    let _ = writeln!(out, "    end");
                    continue;
                }
                Step::Within(group) => {
                    let _ = writeln!(out, "    critical {}", mermaid_text(&format!("within {} ms", group.ms)));
                    self.steps(out, &group.steps, &format!("{number}."), 0..group.steps.len());
                    let _ = writeln!(out, "    end");
                }
                Step::Concurrently(group) => {
                    for (l, lane) in group.lanes.iter().enumerate() {
                        let keyword = if l == 0 { "par" } else { "and" };
                        let _ = writeln!(out, "    {keyword} lane {}", l + 1);
                        self.steps(out, lane, &format!("{number}.{}.", l + 1), 0..lane.len());
                    }
                    let _ = writeln!(out, "    end");
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// One step's arrow or note.
    fn step(&self, out: &mut String, step: &Spanned<Step>, number: &str) {
        let crate::runner::Explained { from, to, what } = crate::runner::explain_step(&step.value);
        let about = step.value.daemon().map(|d| d.value.as_str());
        let from = (self.participant)(&from, about == Some(from.as_str()) && from != "harness" && from != "manager");
        let to = (self.participant)(&to, about == Some(to.as_str()));
        let what = mermaid_text(&format!("{number}. {what}{}", outcome_note(&step.value)));
        if from == to {
            let _ = writeln!(out, "    Note over {from}: {what}");
        } else {
            let _ = writeln!(out, "    {from}->>{to}: {what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Scenario {
        crate::scenario::load::parse(std::path::Path::new("x.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_step_that_must_fail_says_so() {
        let s = load(
            "version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - start: { daemon: d1 }\n  - api: { daemon: d1, call: start, expect_error: { status: 400 } }\n  - api: { daemon: d1, call: exit, may_fail: true }\n",
        );
        let text = text(&s);
        // Before, step 2 read as a plain call.
        assert!(
            text.contains(" 2. harness → d1: PUT /api/v1/daemon/start — must fail: an error with status 400"),
            "{text}"
        );
        assert!(text.contains(" 3. harness → d1: PUT /api/v1/daemon/exit — may fail"), "{text}");
        assert!(text.contains("manager recover policy: none"), "{text}");
    }

    #[test]
    fn hostile_names_cannot_break_the_diagram() {
        let s = load(
            "version: 1\nname: \"a; b # c %% d <e>\"\ndaemons: [{ id: end }, { id: harness }, { id: alt }]\nsteps:\n  - start: { daemon: end }\n  - signal: { daemon: harness, signal: SIGKILL }\n  - start_daemon: { daemon: alt }\n",
        );
        let diagram = mermaid(&s);
        assert!(diagram.contains("    participant D1 as daemon end\n"), "{diagram}");
        assert!(diagram.contains("    Note over H: a#59; b #35; c #37;#37; d #60;e#62;\n"), "{diagram}");
        // The daemon named `harness` is its own participant, not the harness.
        assert!(diagram.contains("    H->>D2: 2. SIGKILL"), "{diagram}");
        assert!(diagram.contains("    M->>D3: 3."), "{diagram}");
        for line in diagram.lines().skip(1) {
            let statement = line.trim_start();
            assert!(
                !statement.contains(';') || statement.matches(';').count() == statement.matches('#').count(),
                "{line}"
            );
        }
    }
}
