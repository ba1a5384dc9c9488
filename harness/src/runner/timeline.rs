//! One timeline merged from the harness's own journal (steps and manager events) and the
//! mock journals, ordered by their shared CLOCK_MONOTONIC timestamps, for failure reports.

use std::path::Path;

use serde_json::Value;

/// The client's side of the conversation that the daemons' journals cannot show: its
/// exchanges that got no reply (a timeout, a connection refused or cut). Its other
/// exchanges are in the daemons' journals already.
/// The request's body (a mount's configuration, registry credentials and all) is left
/// out: reports leave the host.
pub fn client_failures(file: &Path) -> Vec<Value> {
    let mut failures: Vec<Value> =
        merge(&[file]).into_iter().filter(|e| e["event"] == "exchange" && e["status"].is_null()).collect();
    for failure in &mut failures {
        if let Some(fields) = failure.as_object_mut() {
            fields.remove("request");
        }
    }
    failures
}

/// Reads JSON-lines journals and returns their entries ordered by `t_ns`.
pub fn merge(files: &[&Path]) -> Vec<Value> {
    let mut all: Vec<Value> = files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect::<Vec<_>>())
        .collect();
    all.sort_by_key(|e| e["t_ns"].as_u64().unwrap_or(0));
    all
}

/// One entry as a report line: time since `start_ns`, source, and the essentials.
pub fn describe(entry: &Value, start_ns: u64) -> String {
    let (t, who, what) = parts(entry, start_ns);
    format!("{t:>10.3} ms  {who:<12} {what}")
}

/// One entry of a run's timeline, as the reports carry it (the JSON report's
/// `failure.timeline`); runs of the same event from the same source (a state polled) are
/// one entry with a count.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimelineEntry {
    /// Milliseconds since the scenario started (CLOCK_MONOTONIC, shared by every source).
    pub t_ms: f64,
    /// Who: `harness` (steps), `manager` (daemon-core's events), `mock` or `inject` (a
    /// daemon process's journal), `client`.
    pub source: String,
    /// The daemon process, for a mock's or injector's entry.
    pub pid: Option<u64>,
    /// What happened: `step`, `step_failed`, `manager`, `request`, `exchange`, `state`,
    /// `script`, `start`, …
    pub kind: String,
    /// The entry as the console prints it.
    pub text: String,
    /// How many times it happened in a row (1: once).
    pub count: u64,
    /// When the last of them happened, for a count over 1.
    pub until_ms: Option<f64>,
    /// Everything else its source recorded.
    pub fields: serde_json::Map<String, Value>,
}

impl TimelineEntry {
    /// The console's line for it.
    pub fn line(&self) -> String {
        let who = match self.pid {
            Some(pid) if self.source == "mock" || self.source == "inject" => format!("{}[{pid}]", self.source),
            _ if self.kind == "manager" => "manager".to_owned(),
            _ => self.source.clone(),
        };
        match (self.count, self.until_ms) {
            (n, Some(last)) if n > 1 => {
                format!("{:>10.3} ms  {who:<12} {}  (×{n} until {last:.3} ms)", self.t_ms, self.text)
            }
            _ => format!("{:>10.3} ms  {who:<12} {}", self.t_ms, self.text),
        }
    }
}

/// The entries of a merged journal as timeline entries, repeats folded.
pub fn entries(all: &[Value], start_ns: u64) -> Vec<TimelineEntry> {
    let mut out: Vec<TimelineEntry> = Vec::new();
    for entry in all {
        let (t, _, what) = parts(entry, start_ns);
        let source = entry["source"].as_str().unwrap_or("?").to_owned();
        let pid = entry["pid"].as_u64();
        let kind = entry["event"].as_str().unwrap_or("?").to_owned();
        if let Some(last) =
            out.last_mut().filter(|l| l.source == source && l.pid == pid && l.kind == kind && l.text == what)
        {
            last.count += 1;
            last.until_ms = Some(t);
            continue;
        }
        let mut fields = entry.as_object().cloned().unwrap_or_default();
        for k in ["t_ns", "pid", "source", "event"] {
            fields.remove(k);
        }
        out.push(TimelineEntry { t_ms: t, source, pid, kind, text: what, count: 1, until_ms: None, fields });
    }
    out
}

fn parts(entry: &Value, start_ns: u64) -> (f64, String, String) {
    let t = entry["t_ns"].as_u64().unwrap_or(0).saturating_sub(start_ns) as f64 / 1e6;
    let source = entry["source"].as_str().unwrap_or("?");
    let who = match (source, entry["event"].as_str()) {
        ("mock", _) => format!("mock[{}]", entry["pid"]),
        ("inject", _) => format!("inject[{}]", entry["pid"]),
        (_, Some("manager")) => "manager".to_owned(),
        (other, _) => other.to_owned(),
    };
    let text = |k: &str| entry[k].as_str().map(str::to_owned).unwrap_or_else(|| entry[k].to_string());
    let what = match entry["event"].as_str().unwrap_or("?") {
        // A client's exchange that got no reply: what the client saw instead.
        "exchange" if entry["status"].is_null() => {
            format!("{} {} failed: {}", text("method"), text("path"), text("reply"))
        }
        "request" | "exchange" => format!("{} {} -> {}", text("method"), text("path"), entry["status"]),
        "state" => format!("state {} -> {}", text("from"), text("to")),
        "script" => match entry["name"].as_str() {
            Some(name) => {
                format!("script rule {} ({name}) fired on {} {}", entry["rule"], text("method"), text("path"))
            }
            None => format!("script rule {} fired on {} {}", entry["rule"], text("method"), text("path")),
        },
        "step" => match entry["lane"].as_str() {
            // A lane's steps stand beside the others': each line says whose it is.
            Some(lane) => match entry["n"].as_u64() {
                Some(n) => format!("step {n} `{}` in {lane} (line {})", text("keyword"), entry["line"]),
                None => format!("step `{}` in {lane} (line {})", text("keyword"), entry["line"]),
            },
            None => format!("step {} `{}` (line {})", entry["n"], text("keyword"), entry["line"]),
        },
        "step_failed" => format!("step {} failed: {}", entry["n"], text("message")),
        "manager" => text("what"),
        "start" => format!("started in {}", text("state")),
        other => {
            let mut rest = entry.clone();
            if let Value::Object(map) = &mut rest {
                for k in ["t_ns", "pid", "source", "event"] {
                    map.remove(k);
                }
            }
            if rest.as_object().is_some_and(|m| m.is_empty()) { other.to_owned() } else { format!("{other} {rest}") }
        }
    };
    (t, who, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_interleave_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "{\"t_ns\":3,\"source\":\"mock\",\"pid\":7,\"event\":\"request\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}\n{\"t_ns\":1,\"source\":\"mock\",\"pid\":7,\"event\":\"start\",\"state\":\"RUNNING\"}\n").unwrap();
        std::fs::write(&b, "{\"t_ns\":2,\"source\":\"harness\",\"event\":\"step\",\"n\":1,\"keyword\":\"start\",\"line\":9}\nnot json\n").unwrap();
        let merged = merge(&[&a, &b]);
        let lines: Vec<String> = merged.iter().map(|e| describe(e, 0)).collect();
        assert!(lines[0].ends_with("mock[7]      started in RUNNING"), "{lines:?}");
        assert!(lines[1].ends_with("harness      step 1 `start` (line 9)"), "{lines:?}");
        assert!(lines[2].ends_with("mock[7]      GET /x -> 200"), "{lines:?}");
    }

    #[test]
    fn a_client_s_exchange_without_a_reply_says_what_it_saw() {
        let dir = tempfile::tempdir().unwrap();
        let client = dir.path().join("client.jsonl");
        std::fs::write(&client, "{\"t_ns\":5000000,\"source\":\"client\",\"event\":\"exchange\",\"method\":\"GET\",\"path\":\"/api/v1/daemon\",\"status\":200,\"reply\":\"{}\"}\n{\"t_ns\":9000000,\"source\":\"client\",\"event\":\"exchange\",\"method\":\"GET\",\"path\":\"/api/v1/daemon\",\"request\":\"{\\\"auth\\\":\\\"c2VjcmV0\\\"}\",\"status\":null,\"reply\":\"timed out after 500ms\"}\n").unwrap();
        let failures = client_failures(&client);
        assert_eq!(failures.len(), 1);
        assert!(failures[0].get("request").is_none(), "{}", failures[0]);
        assert!(describe(&failures[0], 0).ends_with("client       GET /api/v1/daemon failed: timed out after 500ms"));
    }

    #[test]
    fn repeated_polls_fold_into_one_line() {
        let poll = |t: u64| serde_json::json!({"t_ns": t * 1_000_000, "source": "mock", "pid": 7, "event": "request", "method": "GET", "path": "/x", "status": 200});
        let entries = vec![
            poll(1),
            poll(2),
            poll(3),
            serde_json::json!({"t_ns": 4_000_000, "source": "harness", "event": "step", "n": 2, "keyword": "sleep", "line": 3}),
        ];
        let objects = super::entries(&entries, 0);
        let lines: Vec<String> = objects.iter().map(TimelineEntry::line).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("mock[7]      GET /x -> 200  (×3 until 3.000 ms)"), "{lines:?}");
        assert!(lines[1].ends_with("harness      step 2 `sleep` (line 3)"), "{lines:?}");
        assert_eq!((objects[0].count, objects[0].until_ms, objects[0].pid), (3, Some(3.0), Some(7)));
        assert_eq!(objects[0].fields["path"], "/x");
        assert_eq!(objects[1].kind, "step");
    }
}
