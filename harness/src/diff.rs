//! Differential runs: the same scenario against mock-nydusd and a real nydusd, and every
//! difference in what daemon-core's client sent and got back: status codes, reply bodies
//! (without the volatile fields below) and so the state sequences the replies carry.
//! Differences that are understood are listed, with the reason, in
//! `docs/diff-explained.yaml`; any other one fails the run.

use std::path::{Path, PathBuf};

use daemon_core::api::Exchange;
use serde::Serialize;
use serde_json::Value;

pub use crate::record::explained::{DEFAULT_EXPLAINED, Explained, ExplainedDifference, remove_pointer};
use crate::runner::{RunConfig, ScenarioResult, run_scenario};
use crate::scenario::model::{Scenario, Target};

/// One exchange as compared: who, what, and the normalised outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalized {
    /// `<daemon id>/<socket file>`.
    pub daemon: String,
    /// `METHOD /path` (query kept, root replaced).
    pub request: String,
    /// HTTP status (`None`: no reply).
    pub status: Option<u16>,
    /// The reply without volatile fields (JSON when it parsed, else text).
    pub reply: Value,
}

/// One difference between the two runs.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The daemon it concerns.
    pub daemon: String,
    /// `METHOD /path`.
    pub request: String,
    /// What the first run (the mock, or the first `--nydusd`) showed (`None`: no such exchange).
    pub left: Option<String>,
    /// What the second run (the real nydusd, or the second `--nydusd`) showed.
    pub right: Option<String>,
    /// The reason, when the difference is explained.
    pub explained: Option<String>,
}

/// The comparison of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioDiff {
    /// What the two runs are called in the report: `mock` and `real`, or the two builds.
    pub labels: [String; 2],
    /// The file.
    pub path: PathBuf,
    /// The scenario name.
    pub name: String,
    /// Why it was not compared because it does not apply: not for both targets, or
    /// skipped on one of them (a requirement of the host, a nydusd release).
    pub not_compared: Option<String>,
    /// Why it could not be compared although it applies: it failed on both sides (each
    /// side's failure, with what a daemon that could not start printed). A scenario that
    /// fails on one side only is compared: that is a difference (the largest there is).
    /// Either fails the diff.
    pub failed: Option<String>,
    /// Exchanges compared (after folding repeats).
    pub compared: usize,
    /// Every difference.
    pub differences: Vec<Difference>,
}

impl ScenarioDiff {
    /// Whether the two runs were two real builds (`harness diff --nydusd A --nydusd B`).
    pub fn between_builds(&self) -> bool {
        self.labels[0] != "mock"
    }

    /// Differences nobody explained.
    pub fn unexplained(&self) -> usize {
        self.differences.iter().filter(|d| d.explained.is_none()).count()
    }

    /// Whether this scenario fails the diff: an unexplained difference, or it could not
    /// be compared for a reason other than "does not apply".
    pub fn fails(&self) -> bool {
        self.failed.is_some() || self.unexplained() > 0
    }
}

/// Runs `scenario` on the mock and on a real nydusd and compares; the mock behaves as the
/// release of that nydusd (2.2 or 2.4) unless the scenario pins one.
pub async fn diff_scenario(
    path: &Path,
    scenario: &Scenario,
    mock: &RunConfig,
    real: &RunConfig,
    explained: &Explained,
) -> ScenarioDiff {
    if !(scenario.targets.contains(&Target::Mock) && scenario.targets.contains(&Target::Real)) {
        return ScenarioDiff::not_compared(["mock", "real"], path, scenario, "does not apply to both targets".into());
    }
    let mut mock = mock.clone();
    let version = crate::runner::mock_version_for(&real.nydusd);
    mock.extra_args.extend(["--mock-nydusd-version".into(), version.as_str().into()]);
    compare_runs(path, scenario, [("mock", &mock), ("real", real)], explained).await
}

/// Runs `scenario` on two real nydusd builds and compares: what changed in nydusd's API
/// between them. Only the volatile fields of `explained` apply (its explanations are
/// about the mock).
pub async fn diff_builds(
    path: &Path,
    scenario: &Scenario,
    a: &RunConfig,
    b: &RunConfig,
    explained: &Explained,
) -> ScenarioDiff {
    let (label_a, label_b) = (a.nydusd.display().to_string(), b.nydusd.display().to_string());
    if !scenario.targets.contains(&Target::Real) {
        return ScenarioDiff::not_compared(
            [&label_a, &label_b],
            path,
            scenario,
            "does not apply to a real nydusd".into(),
        );
    }
    let volatile = Explained { volatile: explained.volatile.clone(), differences: Vec::new() };
    compare_runs(path, scenario, [(&label_a, a), (&label_b, b)], &volatile).await
}

impl ScenarioDiff {
    fn new(labels: [&str; 2], path: &Path, scenario: &Scenario) -> Self {
        Self {
            labels: labels.map(str::to_owned),
            path: path.to_owned(),
            name: scenario.name.clone(),
            not_compared: None,
            failed: None,
            compared: 0,
            differences: Vec::new(),
        }
    }

    fn not_compared(labels: [&str; 2], path: &Path, scenario: &Scenario, why: String) -> Self {
        Self { not_compared: Some(why), ..Self::new(labels, path, scenario) }
    }
}

async fn compare_runs(
    path: &Path,
    scenario: &Scenario,
    sides: [(&str, &RunConfig); 2],
    explained: &Explained,
) -> ScenarioDiff {
    let labels = sides.map(|(label, _)| label);
    for (label, config) in sides {
        if let Some(reason) = crate::runner::skip_reason(scenario, config) {
            return ScenarioDiff::not_compared(labels, path, scenario, format!("skipped on {label}: {reason}"));
        }
    }
    let first = run_scenario(path, scenario, sides[0].1).await;
    let second = run_scenario(path, scenario, sides[1].1).await;
    let mut out = ScenarioDiff::new(labels, path, scenario);
    match (&first.failure, &second.failure) {
        (None, None) => {
            let (a, b) = (normalize_all(&first, explained), normalize_all(&second, explained));
            out.compared = a.len().max(b.len());
            out.differences = compare(&a, &b);
        }
        (Some(a), Some(b)) => {
            out.failed =
                Some(format!("failed on {}: {}; failed on {}: {}", labels[0], outcome(a), labels[1], outcome(b)));
            return out;
        }
        (a, b) => {
            let show = |f: &Option<crate::runner::Failure>| f.as_ref().map_or("passed".to_owned(), outcome);
            out.differences = vec![Difference {
                daemon: "-".into(),
                request: OUTCOME.into(),
                left: Some(show(a)),
                right: Some(show(b)),
                explained: None,
            }];
        }
    }
    for difference in &mut out.differences {
        difference.explained = explained.why(&scenario.name, &difference.request).map(str::to_owned);
    }
    out
}

/// The `request` of the difference a scenario that passes on one side only makes.
pub const OUTCOME: &str = "(the scenario's outcome)";

/// A failure as the diff shows it: the step and its message with what was observed.
fn outcome(failure: &crate::runner::Failure) -> String {
    let observed = failure.observed.as_ref().map(|o| format!(" (observed: {o})")).unwrap_or_default();
    match failure.step {
        0 => format!("failed at {}: {}{observed}", failure.keyword, failure.message),
        n => format!("failed at step {n} `{}` (line {}): {}{observed}", failure.keyword, failure.line, failure.message),
    }
}

fn normalize_all(result: &ScenarioResult, explained: &Explained) -> Vec<Normalized> {
    let mut out: Vec<Normalized> = Vec::new();
    for exchange in &result.exchanges {
        let n = normalize(exchange, &explained.volatile);
        // Polls repeat until something changes; only the changes are compared.
        if out.iter().rev().find(|o| o.daemon == n.daemon).is_some_and(|last| *last == n) {
            continue;
        }
        out.push(n);
    }
    out
}

/// The run's root: the directory holding `socket/<id>/api.sock`.
fn root_of(socket: &Path) -> Option<&Path> {
    socket.parent()?.parent()?.parent()
}

/// Normalises one exchange: the temporary root becomes `<root>`, volatile fields go.
pub fn normalize(exchange: &Exchange, volatile: &[String]) -> Normalized {
    let root = root_of(&exchange.socket).map(|r| r.to_string_lossy().into_owned()).unwrap_or_default();
    let unroot = |s: &str| if root.is_empty() { s.to_owned() } else { s.replace(&root, "<root>") };
    let daemon = {
        let id = exchange.socket.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned());
        let file = exchange.socket.file_name().map(|n| n.to_string_lossy().into_owned());
        format!("{}/{}", id.unwrap_or_default(), file.unwrap_or_default())
    };
    let reply = match serde_json::from_str::<Value>(&exchange.reply) {
        Ok(mut json) if exchange.status.is_some() => {
            for pointer in volatile {
                remove_pointer(&mut json, pointer);
            }
            unroot_value(&mut json, &unroot);
            json
        }
        _ if exchange.status.is_none() => Value::String("(no reply)".into()),
        _ => Value::String(unroot(&exchange.reply)),
    };
    Normalized {
        daemon,
        request: format!("{} {}", exchange.method, unroot(&exchange.path)),
        status: exchange.status,
        reply,
    }
}

fn unroot_value(value: &mut Value, unroot: &impl Fn(&str) -> String) {
    match value {
        Value::String(s) => *s = unroot(s),
        Value::Array(items) => items.iter_mut().for_each(|v| unroot_value(v, unroot)),
        Value::Object(map) => {
            let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
            for (key, mut v) in entries {
                unroot_value(&mut v, unroot);
                map.insert(unroot(&key), v);
            }
        }
        _ => {}
    }
}

/// Aligns the two runs' exchanges per daemon on their requests (longest common
/// subsequence), then compares the aligned pairs and reports the unaligned ones.
pub fn compare(mock: &[Normalized], real: &[Normalized]) -> Vec<Difference> {
    let mut daemons: Vec<&str> = mock.iter().chain(real).map(|n| n.daemon.as_str()).collect();
    daemons.sort_unstable();
    daemons.dedup();
    let mut out = Vec::new();
    for daemon in daemons {
        let a: Vec<&Normalized> = mock.iter().filter(|n| n.daemon == daemon).collect();
        let b: Vec<&Normalized> = real.iter().filter(|n| n.daemon == daemon).collect();
        for (x, y) in align(&a, &b) {
            let describe = |n: &Normalized| {
                format!("{} {}", n.status.map(|s| s.to_string()).unwrap_or_else(|| "-".into()), n.reply)
            };
            let (request, differs) = match (x, y) {
                (Some(x), Some(y)) => (x.request.clone(), x.status != y.status || x.reply != y.reply),
                (Some(n), None) | (None, Some(n)) => (n.request.clone(), true),
                (None, None) => continue,
            };
            if differs {
                out.push(Difference {
                    daemon: daemon.to_owned(),
                    request,
                    left: x.map(describe),
                    right: y.map(describe),
                    explained: None,
                });
            }
        }
    }
    out
}

type Pair<'a> = (Option<&'a Normalized>, Option<&'a Normalized>);

fn align<'a>(a: &[&'a Normalized], b: &[&'a Normalized]) -> Vec<Pair<'a>> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] =
                if a[i].request == b[j].request { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && a[i].request == b[j].request {
            out.push((Some(a[i]), Some(b[j])));
            i += 1;
            j += 1;
        } else if j == m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push((Some(a[i]), None));
            i += 1;
        } else {
            out.push((None, Some(b[j])));
            j += 1;
        }
    }
    out
}

/// The report: one block per scenario, then a summary line.
pub fn report(diffs: &[ScenarioDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        if let Some(why) = &d.failed {
            out.push_str(&format!("FAIL {} ({}): not compared: {why}\n", d.path.display(), d.name));
            continue;
        }
        match &d.not_compared {
            Some(why) => out.push_str(&format!("SKIP {} ({}): {why}\n", d.path.display(), d.name)),
            None if d.differences.is_empty() => {
                out.push_str(&format!("SAME {} ({}, {} exchanges)\n", d.path.display(), d.name, d.compared))
            }
            None => {
                let verdict = if d.unexplained() == 0 { "EXPL" } else { "DIFF" };
                out.push_str(&format!("{verdict} {} ({}, {} exchanges)\n", d.path.display(), d.name, d.compared));
                let [left, right] = &d.labels;
                for x in &d.differences {
                    out.push_str(&format!("     {} {}\n", x.daemon, x.request));
                    out.push_str(&format!("       {left}: {}\n", x.left.as_deref().unwrap_or("(no such exchange)")));
                    out.push_str(&format!("       {right}: {}\n", x.right.as_deref().unwrap_or("(no such exchange)")));
                    match &x.explained {
                        Some(why) => out.push_str(&format!("       explained: {why}\n")),
                        // Between two builds every difference is news, not a fault.
                        None if d.between_builds() => {}
                        None => out.push_str("       UNEXPLAINED\n"),
                    }
                }
            }
        }
    }
    let compared: Vec<&ScenarioDiff> =
        diffs.iter().filter(|d| d.not_compared.is_none() && d.failed.is_none()).collect();
    let failed = diffs.iter().filter(|d| d.failed.is_some()).count();
    let inapplicable = diffs.iter().filter(|d| d.not_compared.is_some()).count();
    let same = compared.iter().filter(|d| d.differences.is_empty()).count();
    let explained: usize = compared.iter().map(|d| d.differences.len() - d.unexplained()).sum();
    let unexplained: usize = compared.iter().map(|d| d.unexplained()).sum();
    let exchanges: usize = compared.iter().map(|d| d.compared).sum();
    if diffs.iter().any(ScenarioDiff::between_builds) {
        out.push_str(&format!(
            "compared {} scenarios ({exchanges} exchanges): {same} identical; {unexplained} differences between the builds; {failed} failed on both; {inapplicable} do not apply\n",
            compared.len(),
        ));
        return out;
    }
    out.push_str(&format!(
        "compared {} scenarios ({exchanges} exchanges): {same} identical; {explained} explained and {unexplained} unexplained differences; {failed} failed on both; {inapplicable} do not apply\n",
        compared.len(),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(path: &str, status: Option<u16>, reply: &str) -> Exchange {
        Exchange {
            socket: "/tmp/nydus-harness-abc/socket/d1/api.sock".into(),
            method: "GET".into(),
            path: path.into(),
            request: String::new(),
            status,
            reply: reply.into(),
        }
    }

    #[test]
    fn normalising_drops_volatile_fields_and_the_root() {
        let e = exchange(
            "/api/v1/daemon",
            Some(200),
            r#"{"version":{"git_commit":"x"},"state":"RUNNING","backend_collection":{"/a":{"config":"/tmp/nydus-harness-abc/cfg"}}}"#,
        );
        let n = normalize(&e, &["/version".into()]);
        assert_eq!(n.daemon, "d1/api.sock");
        assert_eq!(n.reply, serde_json::json!({"state":"RUNNING","backend_collection":{"/a":{"config":"<root>/cfg"}}}));
    }

    #[test]
    fn wildcards_remove_a_field_of_every_entry() {
        let mut v = serde_json::json!({"m": {"/a": {"t": 1, "k": 2}, "/b": {"t": 3}}});
        remove_pointer(&mut v, "/m/*/t");
        assert_eq!(v, serde_json::json!({"m": {"/a": {"k": 2}, "/b": {}}}));
    }

    #[test]
    fn alignment_reports_changed_missing_and_extra_exchanges() {
        let n = |path: &str, status: u16| normalize(&exchange(path, Some(status), "{}"), &[]);
        let mock = [n("/a", 200), n("/b", 204), n("/c", 204)];
        let real = [n("/a", 200), n("/b", 500), n("/d", 204)];
        let found: Vec<(String, bool, bool)> =
            compare(&mock, &real).into_iter().map(|d| (d.request, d.left.is_some(), d.right.is_some())).collect();
        assert_eq!(
            found,
            [("GET /b".into(), true, true), ("GET /c".into(), true, false), ("GET /d".into(), false, true)]
        );
    }

    #[test]
    fn the_order_of_keys_is_not_a_difference() {
        // nydusd fills `backend_collection` from a hash map: mounts made as s1, s2, s3
        // come back as /s2, /s1, /s3. The order is not part of its contract.
        let mock = exchange("/api/v1/daemon", Some(200), r#"{"backend_collection":{"/s1":{"a":1,"b":2},"/s2":{}}}"#);
        let real = exchange("/api/v1/daemon", Some(200), r#"{"backend_collection":{"/s2":{},"/s1":{"b":2,"a":1}}}"#);
        let (mock, real) = (normalize(&mock, &[]), normalize(&real, &[]));
        assert!(compare(std::slice::from_ref(&mock), &[real]).is_empty());
        // A value that differs still does.
        let other = normalize(
            &exchange("/api/v1/daemon", Some(200), r#"{"backend_collection":{"/s2":{},"/s1":{"a":1,"b":3}}}"#),
            &[],
        );
        assert_eq!(compare(&[mock], &[other]).len(), 1);
    }

    #[test]
    fn between_two_builds_differences_are_listed_with_the_builds_names() {
        let n = |reply: &str| normalize(&exchange("/api/v1/daemon", Some(200), reply), &[]);
        let diff = ScenarioDiff {
            labels: ["/opt/nydusd-2.2".into(), "/opt/nydusd-2.4".into()],
            path: "s.yaml".into(),
            name: "s".into(),
            not_compared: None,
            failed: None,
            compared: 1,
            differences: compare(&[n(r#"{"a":1}"#)], &[n(r#"{"a":2}"#)]),
        };
        let text = report(std::slice::from_ref(&diff));
        assert!(
            text.contains("       /opt/nydusd-2.2: 200 {\"a\":1}\n       /opt/nydusd-2.4: 200 {\"a\":2}\n"),
            "{text}"
        );
        assert!(!text.contains("UNEXPLAINED"), "{text}");
        assert!(text.ends_with("1 differences between the builds; 0 failed on both; 0 do not apply\n"), "{text}");
    }

    #[test]
    fn the_shipped_explanations_parse() {
        let explained = Explained::parse(DEFAULT_EXPLAINED, "docs/diff-explained.yaml").unwrap();
        assert!(explained.volatile.iter().any(|p| p == "/version"));
        assert!(explained.differences.iter().all(|d| !d.why.trim().is_empty()));
    }
}
