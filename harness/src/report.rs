//! Reports: a line per scenario with failure details a reader can act on, the closing
//! `N passed, N failed, N skipped` line, and machine-readable JUnit and JSON.

use std::fmt::Write;
use std::path::Path;

use serde_json::json;

use crate::runner::ScenarioResult;

fn shown_path(result: &ScenarioResult, base: &Path) -> String {
    result.path.strip_prefix(base).unwrap_or(&result.path).display().to_string()
}

/// The line printed for one scenario, plus failure details.
pub fn scenario_report(result: &ScenarioResult, base: &Path) -> String {
    let path = shown_path(result, base);
    let ms = result.duration.as_secs_f64() * 1000.0;
    let mut out = String::new();
    if let Some(reason) = &result.skipped {
        let _ = writeln!(out, "SKIP {path} ({}): {reason}", result.name);
        return out;
    }
    let Some(f) = &result.failure else {
        let _ = writeln!(out, "PASS {path} ({}, {ms:.0} ms)", result.name);
        return out;
    };
    let _ = writeln!(out, "FAIL {path} ({}, {ms:.0} ms)", result.name);
    if f.step > 0 {
        let _ = writeln!(out, "     step {} `{}` at {path}:{}: {}", f.step, f.keyword, f.line, f.message);
    } else if f.line > 0 {
        let _ = writeln!(out, "     {} at {path}:{}: {}", f.keyword, f.line, f.message);
    } else {
        let _ = writeln!(out, "     {}: {}", f.keyword, f.message);
    }
    if let Some(expected) = &f.expected {
        let _ = writeln!(out, "       expected: {expected}");
    }
    if let Some(observed) = &f.observed {
        let _ = writeln!(out, "       observed: {observed}");
    }
    if !f.timeline.is_empty() {
        let _ =
            writeln!(out, "     timeline (harness steps, manager events, mock journals; last {}):", f.timeline.len());
        for line in &f.timeline {
            let _ = writeln!(out, "       {line}");
        }
    }
    if let Some(bundle) = &f.bundle {
        let _ = writeln!(out, "     repro bundle: {}", bundle.display());
    }
    out
}

/// The closing line.
pub fn summary(results: &[ScenarioResult]) -> String {
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    format!("{} passed, {failed} failed, {skipped} skipped", results.len() - failed - skipped)
}

/// The results as JSON.
pub fn to_json(results: &[ScenarioResult], base: &Path) -> serde_json::Value {
    let scenarios: Vec<_> = results
        .iter()
        .map(|r| {
            let status = if r.skipped.is_some() {
                "skip"
            } else if r.failure.is_some() {
                "fail"
            } else {
                "pass"
            };
            json!({
                "path": shown_path(r, base),
                "name": r.name,
                "status": status,
                "duration_ms": r.duration.as_secs_f64() * 1000.0,
                "skipped": r.skipped,
                "failure": r.failure.as_ref().map(|f| json!({
                    "step": f.step, "line": f.line, "keyword": f.keyword, "message": f.message,
                    "expected": f.expected, "observed": f.observed, "timeline": f.timeline,
                    "bundle": f.bundle,
                })),
            })
        })
        .collect();
    json!({ "summary": summary(results), "scenarios": scenarios })
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The results as a JUnit XML document (one testsuite, one testcase per scenario).
pub fn to_junit(results: &[ScenarioResult], base: &Path) -> String {
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    let skipped = results.iter().filter(|r| r.skipped.is_some()).count();
    let total: f64 = results.iter().map(|r| r.duration.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"harness\" tests=\"{}\" failures=\"{failed}\" skipped=\"{skipped}\" time=\"{total:.3}\">",
        results.len()
    );
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml_escape(&shown_path(r, base)),
            xml_escape(&r.name),
            r.duration.as_secs_f64()
        );
        if let Some(reason) = &r.skipped {
            let _ = writeln!(out, "><skipped message=\"{}\"/></testcase>", xml_escape(reason));
        } else if let Some(f) = &r.failure {
            let body = scenario_report(r, base);
            let _ = writeln!(
                out,
                "><failure message=\"{}\">{}</failure></testcase>",
                xml_escape(&format!("step {} `{}`: {}", f.step, f.keyword, f.message)),
                xml_escape(&body)
            );
        } else {
            let _ = writeln!(out, "/>");
        }
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_whose_task_panicked_is_a_failure_everywhere() {
        let payload: Box<dyn std::any::Any + Send> = Box::new("capacity overflow");
        let result = ScenarioResult::panicked("s.yaml".into(), "s".into(), payload.as_ref());
        let results = [result];
        // Before the fix the scenario vanished from the count, JUnit and JSON.
        assert_eq!(summary(&results), "0 passed, 1 failed, 0 skipped");
        let json = to_json(&results, Path::new(""));
        assert_eq!(json["scenarios"][0]["status"], "fail", "{json}");
        assert!(json.to_string().contains("the harness panicked: capacity overflow"), "{json}");
        let junit = to_junit(&results, Path::new(""));
        assert!(junit.contains("<failure") && junit.contains("capacity overflow"), "{junit}");
        assert!(scenario_report(&results[0], Path::new("")).contains("the harness panicked: capacity overflow"));
    }
}
