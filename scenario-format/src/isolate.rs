//! Reading past a broken step, so that one `validate` reports every error of a file:
//! serde stops at a file's first error, so the loader puts a harmless stand-in where the
//! step (or mock script rule) with that error was written, keeping every other line and
//! column where it was, and reads the file again. Only a step or rule that starts its
//! own line (`- ` in block style, as every library file writes them) is replaced: its text
//! runs from its start to the next node after it, and the stand-in keeps its line breaks.
//! An error anywhere else (a daemon, the manager) ends the reading there: replacing a
//! daemon would make every step naming it an error of its own.

use crate::conformance::{Document, SchemaProblem};
use crate::model::Scenario;
use crate::steps::Invalid;

/// At most this many errors are read past: each costs one more read of the file.
pub(crate) const MAX_ERRORS: usize = crate::load::MAX_REPORTED;

/// And at most this much text is read in all, so that a file at the loader's size bound
/// full of errors costs a few reads, not 32 (a small file is read up to 32 times).
const READ_BUDGET: usize = 8 * 1024 * 1024;

/// What reading the file with stand-ins gave.
pub(crate) struct Reading {
    /// serde's errors, in the order it met them.
    pub problems: Vec<Invalid>,
    /// The scenario, read once every error had its stand-in (stand-ins included): the
    /// cross-reference checks run on it.
    pub scenario: Option<Scenario>,
}

/// What may be replaced by a stand-in, and by which.
#[derive(Clone, Copy)]
enum Kind {
    Step,
    Rule,
}

impl Kind {
    /// The kind of the node at `pointer`: an item of a `steps` list (a scenario's, a
    /// group's, a lane of `concurrently`) or of a script's `rules`.
    fn of(pointer: &str) -> Option<Self> {
        let mut parts = pointer.rsplit('/');
        let (last, parent, grandparent) = (parts.next()?, parts.next()?, parts.next());
        if last.is_empty() || !last.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match (parent, grandparent) {
            ("steps", _) => Some(Self::Step),
            ("rules", _) => Some(Self::Rule),
            (lane, Some("concurrently")) if lane.bytes().all(|b| b.is_ascii_digit()) => Some(Self::Step),
            _ => None,
        }
    }

    /// A stand-in that loads and checks clean wherever one of its kind may stand.
    fn stand_in(self) -> &'static str {
        match self {
            Self::Step => "sleep: { ms: 0 }",
            Self::Rule => "{ then: [reply] }",
        }
    }
}

/// Reads `text` as a scenario, past each error a stand-in can take the place of.
pub(crate) fn read(text: &str, document: &Document, schema: &[SchemaProblem]) -> Reading {
    let mut current = text.to_owned();
    let mut problems = Vec::new();
    let mut replaced: Vec<String> = Vec::new();
    let rounds = (READ_BUDGET / text.len().max(1)).clamp(1, MAX_ERRORS);
    while problems.len() < rounds {
        let error = match serde_saphyr::from_str::<Scenario>(&current) {
            Ok(scenario) => return Reading { problems, scenario: Some(scenario) },
            Err(error) => error,
        };
        let (line, column, message) = mock_nydusd::script::describe_yaml_error(&error, &current);
        let mut problem = Invalid { line, column, message };
        let missing_at_top = relocate_missing(&mut problem, schema);
        // The same error again: its stand-in did not take its place.
        if problems.last() == Some(&problem) {
            break;
        }
        // A key the scenario itself must have: given at the end, where no line moves.
        if let Some(stand_in) = missing_at_top.and_then(top_stand_in) {
            problems.push(problem);
            current = format!("{current}\n{stand_in}\n");
            continue;
        }
        // The innermost step or rule that can be replaced: one written in flow style
        // (`steps: [{ ... }]`) gives way to the block-style step around it.
        let replacement = enclosing(document, (problem.line, problem.column))
            .into_iter()
            .filter(|(pointer, _)| !replaced.contains(pointer))
            .find_map(|(pointer, kind)| {
                let (start, end) = document.extent(&pointer)?;
                Some((with_stand_in(&current, start, end, kind.stand_in())?, pointer))
            });
        problems.push(problem);
        let Some((next, pointer)) = replacement else { break };
        current = next;
        replaced.push(pointer);
    }
    // Stopped by the bound with errors left: say so, rather than let the cross-reference
    // checks that did not run look passed.
    if problems.len() >= rounds
        && let Some(last) = problems.last().cloned()
    {
        problems.push(Invalid {
            message: format!(
                "reading stopped after {} errors: the checks across steps, daemons and instances did not run; \
                 fix these and validate again",
                problems.len()
            ),
            ..last
        });
    }
    Reading { problems, scenario: None }
}

/// serde reports a missing key where its mapping ends (the end of the file for a missing
/// `version`); the schema reports the same key where the mapping starts, which is where
/// the author looks: the nearest such place before serde's. Returns the key when it is
/// one of the scenario's own.
fn relocate_missing<'a>(problem: &mut Invalid, schema: &'a [SchemaProblem]) -> Option<&'a str> {
    let key = problem.message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next())?;
    let at = (problem.line, problem.column);
    let start = schema
        .iter()
        .filter(|p| p.missing.as_deref() == Some(key) && (p.problem.line, p.problem.column) <= at)
        .max_by_key(|p| (p.problem.line, p.problem.column))?;
    problem.line = start.problem.line;
    problem.column = start.problem.column;
    start.at_top.then_some(start.missing.as_deref()).flatten()
}

/// A stand-in for each key a scenario must have.
fn top_stand_in(key: &str) -> Option<&'static str> {
    match key {
        "version" => Some("version: 1"),
        "name" => Some("name: unnamed"),
        _ => None,
    }
}

/// The steps and rules whose text holds `at`, the innermost first.
fn enclosing(document: &Document, at: (u64, u64)) -> Vec<(String, Kind)> {
    let mut found: Vec<(String, Kind)> = document
        .pointers()
        .filter_map(|pointer| Some((pointer, Kind::of(pointer)?)))
        .filter(|(pointer, _)| {
            document.extent(pointer).is_some_and(|(start, end)| start <= at && end.is_none_or(|end| at < end))
        })
        .map(|(pointer, kind)| (pointer.to_owned(), kind))
        .collect();
    found.sort_by_key(|(pointer, _)| std::cmp::Reverse(pointer.matches('/').count()));
    found
}

/// `text` with the node from `start` to `end` replaced by `stand_in` and as many line
/// breaks as the node held; `None` unless the node starts its line after `- ` and ends
/// on a line before the next node's.
fn with_stand_in(text: &str, start: (u64, u64), end: Option<(u64, u64)>, stand_in: &str) -> Option<String> {
    let from = offset(text, start)?;
    let to = match end {
        Some(end) => offset(text, end)?,
        None => text.len(),
    };
    let line_start = text[..from].rfind('\n').map_or(0, |i| i + 1);
    let prefix = &text[line_start..from];
    let block_item = prefix.trim_end().ends_with('-') && prefix.chars().all(|c| c == ' ' || c == '-');
    if !block_item {
        return None;
    }
    // The last node runs to the end of the file, newline or not: all of it goes.
    if end.is_none() {
        let breaks = text[from..].matches('\n').count();
        return Some(format!("{}{stand_in}{}", &text[..from], "\n".repeat(breaks.max(1))));
    }
    let last_break = text.get(from..to)?.rfind('\n')?;
    let breaks = text[from..from + last_break].matches('\n').count() + 1;
    Some(format!("{}{stand_in}{}{}", &text[..from], "\n".repeat(breaks), &text[from + last_break + 1..]))
}

/// The byte offset of 1-based `line` and `column` (in characters).
fn offset(text: &str, (line, column): (u64, u64)) -> Option<usize> {
    let line = usize::try_from(line).ok()?.checked_sub(1)?;
    let column = usize::try_from(column).ok()?.checked_sub(1)?;
    let line_start = if line == 0 { 0 } else { text.match_indices('\n').nth(line - 1)?.0 + 1 };
    let rest = &text[line_start..];
    let line_text = &rest[..rest.find('\n').unwrap_or(rest.len())];
    match line_text.char_indices().nth(column) {
        Some((i, _)) => Some(line_start + i),
        None if line_text.chars().count() == column => Some(line_start + line_text.len()),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_keeps_every_other_place() {
        let text = "steps:\n  - start:\n      daemon: d1\n\n  - sleep: { ms: 1 }\n";
        let out = with_stand_in(text, (2, 5), Some((5, 5)), "sleep: { ms: 0 }").unwrap();
        assert_eq!(out, "steps:\n  - sleep: { ms: 0 }\n\n\n  - sleep: { ms: 1 }\n");
        // The last step runs to the end of the file.
        let out = with_stand_in(text, (5, 5), None, "X").unwrap();
        assert_eq!(out, "steps:\n  - start:\n      daemon: d1\n\n  - X\n");
        // The last step without a final newline: no part of it is left behind.
        let out = with_stand_in("steps:\n  - start:\n      bogus: 1", (2, 5), None, "X").unwrap();
        assert_eq!(out, "steps:\n  - X\n");
        // Flow style: not replaced.
        assert_eq!(with_stand_in("steps: [{ a: 1 }, { b: 2 }]\n", (1, 9), Some((1, 19)), "X"), None);
    }

    #[test]
    fn kinds_follow_the_pointer() {
        assert!(matches!(Kind::of("/steps/3"), Some(Kind::Step)));
        assert!(matches!(Kind::of("/steps/0/concurrently/1/0"), Some(Kind::Step)));
        assert!(matches!(Kind::of("/steps/0/background/steps/2"), Some(Kind::Step)));
        assert!(matches!(Kind::of("/daemons/0/script/rules/1"), Some(Kind::Rule)));
        assert!(Kind::of("/daemons/0").is_none());
        assert!(Kind::of("/steps").is_none());
        assert!(Kind::of("/steps/0/concurrently/1").is_none());
    }
}
