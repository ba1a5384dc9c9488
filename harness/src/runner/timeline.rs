//! One timeline merged from the harness's own journal (steps and manager events) and the
//! mock journals, ordered by their shared CLOCK_MONOTONIC timestamps, for failure reports.

use std::path::Path;

use serde_json::Value;

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

/// Report lines for `entries`, with runs of the same event from the same source (a state
/// being polled, say) folded into one line with a count.
pub fn describe_all(entries: &[Value], start_ns: u64) -> Vec<String> {
    let mut out: Vec<(f64, f64, String, String, usize)> = Vec::new();
    for entry in entries {
        let (t, who, what) = parts(entry, start_ns);
        match out.last_mut() {
            Some((_, last, w, x, n)) if *w == who && *x == what => {
                *last = t;
                *n += 1;
            }
            _ => out.push((t, t, who, what, 1)),
        }
    }
    out.into_iter()
        .map(|(first, last, who, what, n)| {
            if n == 1 {
                format!("{first:>10.3} ms  {who:<12} {what}")
            } else {
                format!("{first:>10.3} ms  {who:<12} {what}  (×{n} until {last:.3} ms)")
            }
        })
        .collect()
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
    fn repeated_polls_fold_into_one_line() {
        let poll = |t: u64| serde_json::json!({"t_ns": t * 1_000_000, "source": "mock", "pid": 7, "event": "request", "method": "GET", "path": "/x", "status": 200});
        let entries = vec![
            poll(1),
            poll(2),
            poll(3),
            serde_json::json!({"t_ns": 4_000_000, "source": "harness", "event": "step", "n": 2, "keyword": "sleep", "line": 3}),
        ];
        let lines = describe_all(&entries, 0);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("GET /x -> 200  (×3 until 3.000 ms)"), "{lines:?}");
    }
}
