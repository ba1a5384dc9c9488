//! The results as a table.

use serde_json::Value;

/// The results as a table.
pub fn table(results: &Value) -> String {
    let mut out = String::new();
    lifecycle_rows(results, &mut out);
    api_rows(results, &mut out);
    stall_row(&results["read_stall_during_fuse_failover"], &mut out);
    scale_and_library_rows(results, &mut out);
    leak_row(results, &mut out);
    out
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Recovery, detection and state-wait latencies.
fn lifecycle_rows(results: &Value, out: &mut String) {
    let row = |name: &str, v: &Value| {
        format!("{name:<44} p50 {:>8.2} ms   p99 {:>8.2} ms   ({} runs)\n", f(&v["p50_ms"]), f(&v["p99_ms"]), v["runs"])
    };
    out.push_str(&row("failover, SIGKILL to RUNNING", &results["failover_sigkill_to_running"]));
    out.push_str(&row("failover, upstream retry timing", &results["failover_with_upstream_retry_timing"]));
    out.push_str(&format!(
        "{:<44} {:.1}x\n",
        "upstream timing / ours (p50)",
        results["upstream_over_ours_p50"].as_f64().unwrap_or(f64::NAN)
    ));
    out.push_str(&row("restart, SIGKILL to RUNNING", &results["restart_sigkill_to_running"]));
    out.push_str(&row("death detection (SIGKILL to event)", &results["death_detection"]));
    out.push_str(&row("state wait reaction (change to return)", &results["state_wait_reaction"]));
    out.push_str(&row("state wait reaction, upstream retry timing", &results["state_wait_reaction_upstream_timing"]));
}

/// API latency through daemon-core and over a raw connection.
fn api_rows(results: &Value, out: &mut String) {
    for (name, key) in [("mock", "api_latency_mock"), ("real nydusd", "api_latency_real_nydusd")] {
        let l = &results[key];
        if l.is_null() {
            continue;
        }
        out.push_str(&format!(
            "{:<44} p50 {:>8.1} us   p99 {:>8.1} us   {:>8.0} requests/s\n",
            format!("GET /api/v1/daemon via daemon-core, {name}"),
            l["p50_us"].as_f64().unwrap_or(f64::NAN),
            l["p99_us"].as_f64().unwrap_or(f64::NAN),
            l["requests_per_second"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    for raw in results["api_raw_client"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<44} p50 {:>8.1} us   p99 {:>8.1} us   {:>8.0} requests/s   RSS after {} requests {:.1} MB\n",
            format!("GET /api/v1/daemon raw client, {}", raw["daemon"].as_str().unwrap_or("?")),
            raw["p50_us"].as_f64().unwrap_or(f64::NAN),
            raw["p99_us"].as_f64().unwrap_or(f64::NAN),
            raw["requests_per_second"].as_f64().unwrap_or(f64::NAN),
            raw["requests"],
            raw["rss_kb_after"].as_f64().unwrap_or(f64::NAN) / 1024.0,
        ));
        if let Some(added) = raw["overhead_p50_us"].as_f64() {
            let what = if raw["daemon"].as_str().is_some_and(|d| d.ends_with("through the injector")) {
                "  injector overhead (no rule fires)"
            } else {
                "  recorder overhead"
            };
            out.push_str(&format!("{what:<44} added p50 {added:>5.1} us per call\n"));
        }
    }
}

/// A live reader's longest stall during a FUSE failover.
fn stall_row(stall: &Value, out: &mut String) {
    if let Some(reason) = stall["skipped"].as_str() {
        out.push_str(&format!("{:<44} skipped: {reason}\n", "read stall during a FUSE failover"));
    } else if !stall.is_null() {
        out.push_str(&format!(
            "{:<44} p50 {:>8.2} ms   max {:>8.2} ms   ({} failovers, {} reads, {} failed)\n",
            "read stall during a FUSE failover",
            stall["p50_ms"].as_f64().unwrap_or(f64::NAN),
            stall["max_ms"].as_f64().unwrap_or(f64::NAN),
            stall["runs"],
            stall["reads"],
            stall["failed_reads"],
        ));
    }
}

/// N daemons at once, and the scenario library.
fn scale_and_library_rows(results: &Value, out: &mut String) {
    for s in results["scale"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:>4} daemons: start all {:>8.1} ms, fail all over {:>8.1} ms, manager RSS {:.1} MB, mock RSS {:.1} MB each\n",
            s["daemons"],
            s["start_all_ms"].as_f64().unwrap_or(f64::NAN),
            s["failover_all_ms"].as_f64().unwrap_or(f64::NAN),
            s["manager_rss_mb"].as_f64().unwrap_or(f64::NAN),
            s["mock_rss_mb_per_daemon"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    let library = &results["scenario_library"];
    if !library.is_null() {
        out.push_str(&format!(
            "scenario library: {} scenarios in {:.2} s ({} at a time; {} passed, {} failed, {} skipped)\n",
            library["scenarios"],
            library["wall_ms"].as_f64().unwrap_or(f64::NAN) / 1e3,
            library["jobs"],
            library["passed"],
            library["failed"],
            library["skipped"],
        ));
    }
}

/// Failovers in a row: what the manager held before and after.
fn leak_row(results: &Value, out: &mut String) {
    if let Some(l) = results.get("leak_check").filter(|l| !l.is_null()) {
        out.push_str(&format!(
            "{} failovers in a row: fds {} -> {}, child processes {} -> {}, manager RSS {} -> {} kB, mounts left {}\n",
            l["failovers"],
            l["fds"][0],
            l["fds"][1],
            l["child_processes"][0],
            l["child_processes"][1],
            l["rss_kb"][0],
            l["rss_kb"][1],
            l["mounts_under_root_after"]
        ));
    }
}
