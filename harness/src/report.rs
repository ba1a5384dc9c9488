//! Human-readable reports: one line per scenario, details for failures, and the closing
//! `N passed, N failed` line that CI reads.

use std::fmt::Write;
use std::path::Path;

use crate::runner::ScenarioResult;

/// The line printed for one scenario, plus failure details.
pub fn scenario_report(result: &ScenarioResult, base: &Path) -> String {
    let path = result.path.strip_prefix(base).unwrap_or(&result.path).display().to_string();
    let ms = result.duration.as_secs_f64() * 1000.0;
    let mut out = String::new();
    match &result.failure {
        None => {
            let _ = writeln!(out, "PASS {path} ({}, {ms:.0} ms)", result.name);
        }
        Some(f) => {
            let _ = writeln!(out, "FAIL {path} ({}, {ms:.0} ms)", result.name);
            if f.step > 0 {
                let _ = writeln!(out, "     step {} `{}` at {path}:{}: {}", f.step, f.keyword, f.line, f.message);
            } else {
                let _ = writeln!(out, "     {}: {}", f.keyword, f.message);
            }
            if let Some(expected) = &f.expected {
                let _ = writeln!(out, "       expected: {expected}");
            }
            if let Some(observed) = &f.observed {
                let _ = writeln!(out, "       observed: {observed}");
            }
            for (daemon, lines) in &f.journals {
                let _ = writeln!(out, "     journal of {daemon} (last {} events):", lines.len());
                for line in lines {
                    let _ = writeln!(out, "       {line}");
                }
            }
        }
    }
    out
}

/// The closing line.
pub fn summary(results: &[ScenarioResult]) -> String {
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    format!("{} passed, {failed} failed", results.len() - failed)
}
