//! The reports and the command line as other tools read them: JUnit parsed by an XML
//! parser that is not the writer (roxmltree), the JSON report checked against its
//! published schema by a validator that is not the generator (jsonschema), and the
//! commands a user reaches for first (`list`, `completions`, `man`, `--help`).

mod common;

use common::{harness, repo};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `harness run` with both reports; returns the exit code, the output, the JUnit text
/// and the JSON report.
fn run_with_reports(args: &[&str]) -> (i32, String, String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend(["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    let (code, text) = harness(&all);
    keep_copies(&json, &junit);
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("no JUnit report ({e}):\n{text}"));
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_json_against_its_schema(&report);
    (code, text, xml, report)
}

/// With `HARNESS_REPORT_COPIES` set (ci/test.sh sets it), every report a test wrote is
/// kept there, so that ci/conformance.sh checks each against the JUnit XSD and the JSON
/// schema with tools independent of the harness.
fn keep_copies(json: &Path, junit: &Path) {
    let Some(dir) = std::env::var_os("HARNESS_REPORT_COPIES") else { return };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let unique = format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], "");
    for (from, ext) in [(json, "json"), (junit, "xml")] {
        if from.exists() {
            std::fs::copy(from, dir.join(format!("{unique}.{ext}"))).unwrap();
        }
    }
}

fn check_json_against_its_schema(report: &serde_json::Value) {
    let committed = std::fs::read_to_string(repo().join("docs/report.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&committed).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the report schema is a valid schema");
    let errors: Vec<String> = validator.iter_errors(report).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(errors.is_empty(), "the JSON report breaks its schema: {errors:?}\n{report:#}");
}

/// The attributes the common JUnit schemas require or CI servers read, on every element.
fn check_junit_shape(xml: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not XML: {e}\n{xml}"));
    let root = doc.root_element();
    assert!(root.has_tag_name("testsuites"), "{xml}");
    // What junit-10.xsd (ci/schemas) allows on the root; ci/conformance.sh runs the XSD itself.
    for attribute in root.attributes() {
        let allowed = ["name", "time", "tests", "failures", "disabled", "errors"];
        assert!(allowed.contains(&attribute.name()), "`{}` on <testsuites>:\n{xml}", attribute.name());
    }
    for suite in root.children().filter(|n| n.has_tag_name("testsuite")) {
        for attribute in ["name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname"] {
            assert!(suite.attribute(attribute).is_some(), "testsuite without `{attribute}`:\n{xml}");
        }
        let cases: Vec<_> = suite.children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(suite.attribute("tests"), Some(cases.len().to_string().as_str()), "{xml}");
        for case in cases {
            for attribute in ["name", "classname", "time"] {
                assert!(case.attribute(attribute).is_some(), "testcase without `{attribute}`:\n{xml}");
            }
            let outputs = ["system-out", "system-err"];
            for outcome in case.children().filter(|n| n.is_element() && !outputs.contains(&n.tag_name().name())) {
                assert!(outcome.attribute("type").is_some(), "<{}> without a type:\n{xml}", outcome.tag_name().name());
                assert!(
                    outcome.attribute("message").is_some(),
                    "<{}> without a message:\n{xml}",
                    outcome.tag_name().name()
                );
            }
        }
    }
    doc
}

fn cases<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<(String, Option<(String, String)>)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|case| {
            let name = case.attribute("name").unwrap().to_owned();
            let outcome = case
                .children()
                .find(|n| n.is_element())
                .map(|n| (n.tag_name().name().to_owned(), n.attribute("type").unwrap_or_default().to_owned()));
            (name, outcome)
        })
        .collect()
}

#[test]
fn hostile_names_keep_both_reports_valid_and_counts_are_numbers() {
    let (code, text, xml, report) = run_with_reports(&[
        "harness/tests/fixtures/hostile-names.yaml",
        "scenarios/lifecycle/start-running.yaml",
        "--keep-going",
    ]);
    assert_eq!(code, 1, "{text}");
    let doc = check_junit_shape(&xml);
    let cases = cases(&doc);
    // Before: `&#1;` in the name, and the document was no longer XML.
    assert_eq!(cases[0].0, "hostile \\u{1} <name> & \"quotes\" ]]> \\u{1b}[31m", "{xml}");
    assert_eq!(cases[0].1, Some(("failure".into(), "wait_state".into())), "{xml}");
    assert_eq!(cases[1], ("start-reaches-running".into(), None), "{xml}");
    // Before: `"summary": "1 passed, 1 failed, 0 skipped"`, a string.
    assert_eq!(
        report["summary"],
        serde_json::json!({ "total": 2, "passed": 1, "flaky": 0, "failed": 1, "skipped": 0, "not_run": 0, "interrupted": 0 })
    );
    assert_eq!(report["scenarios"][0]["failure"]["expected"], "READY");
    assert!(report["hostname"].as_str().is_some_and(|h| !h.is_empty()), "{report}");
    // The recap repeats the failure after the summary.
    let recap = text.split("1 passed, 1 failed, 0 skipped\n").nth(1).unwrap_or_default();
    assert!(recap.starts_with("failures:\n  FAIL harness/tests/fixtures/hostile-names.yaml"), "{text}");
}

#[test]
fn a_run_stopped_by_its_first_failure_lists_what_it_did_not_run() {
    let (code, text, xml, report) = run_with_reports(&[
        "harness/tests/fixtures/wrong-state.yaml",
        "scenarios/lifecycle/start-running.yaml",
        "scenarios/lifecycle/destroy.yaml",
        "--jobs",
        "1",
    ]);
    assert_eq!(code, 1, "{text}");
    let doc = check_junit_shape(&xml);
    let cases = cases(&doc);
    // Before: only the failure was in the report, and the other two were absent.
    assert_eq!(cases.len(), 3, "{xml}");
    assert_eq!(cases[1].1, Some(("skipped".into(), "not-run".into())), "{xml}");
    assert_eq!(cases[2].1, Some(("skipped".into(), "not-run".into())), "{xml}");
    assert_eq!(report["summary"]["not_run"], 2, "{report}");
    assert_eq!(report["scenarios"][1]["status"], "not_run", "{report}");
    assert!(text.contains("0 passed, 1 failed, 0 skipped, 2 not run"), "{text}");
}

#[test]
fn repeats_are_distinct_test_cases() {
    let (code, text, xml, report) = run_with_reports(&["scenarios/lifecycle/start-running.yaml", "--repeat", "3"]);
    assert_eq!(code, 0, "{text}");
    let doc = check_junit_shape(&xml);
    let names: Vec<String> = cases(&doc).into_iter().map(|(n, _)| n).collect();
    // Before: three test cases with one id, which CI servers merge into one.
    assert_eq!(
        names,
        ["start-reaches-running (run 1/3)", "start-reaches-running (run 2/3)", "start-reaches-running (run 3/3)"]
    );
    let ids: Vec<&str> = report["scenarios"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "scenarios/lifecycle/start-running.yaml#1",
            "scenarios/lifecycle/start-running.yaml#2",
            "scenarios/lifecycle/start-running.yaml#3"
        ]
    );
    // Before: the console named no run, and said "ran 3 scenarios" for one run 3 times.
    for k in 1..=3 {
        assert!(
            text.contains(&format!("PASS scenarios/lifecycle/start-running.yaml (start-reaches-running, run {k}/3,")),
            "{text}"
        );
    }
    assert!(text.contains("ran 3 runs of 1 scenario in"), "{text}");
    assert!(text.contains("pass rates:\n  3/3 passed (100 %) scenarios/lifecycle/start-running.yaml\n"), "{text}");
}

/// A wrapper around the mock whose first start of a scenario run fails (exit 1 before its
/// socket), and every later one is the mock: what a flake looks like, made certain.
fn flaky_mock(dir: &Path) -> PathBuf {
    let mock = dir.join("nydusd");
    std::os::unix::fs::symlink(testkit::bin_exe!("harness"), &mock).unwrap();
    let wrapper = dir.join("flaky-nydusd");
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in *\" --apisock \"*) mkdir {once} 2>/dev/null && {{ echo 'flaky-nydusd: the first start fails' >&2; exit 1; }} ;; esac\nexec {mock} \"$@\"\n",
        once = dir.join("failed-once").display(),
        mock = mock.display()
    );
    std::fs::write(&wrapper, script).unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    wrapper
}

/// A scenario that fails, then passes on a retry, is FLAKY everywhere: on the console,
/// in the summary and recap, in JUnit as a passing case with a `flakyFailure` (as nextest
/// and Surefire write it), in JSON with both attempts. Before, a failure was final.
#[test]
fn a_scenario_that_passes_on_a_retry_is_flaky_in_every_report() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = flaky_mock(dir.path());
    let (code, text, xml, report) = run_with_reports(&[
        "harness/tests/fixtures/flaky-start.yaml",
        "--nydusd",
        wrapper.to_str().unwrap(),
        "--retries",
        "2",
    ]);
    assert_eq!(code, 0, "{text}");
    let file = "harness/tests/fixtures/flaky-start.yaml";
    assert!(
        text.contains(&format!(
            "RETRY {file} (flaky-start, attempt 1 of 3 failed): step 1 `start_daemon` at {file}:11:"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("FLAKY {file} (flaky-start, attempt 2, ")), "{text}");
    assert!(text.contains("1 passed (1 flaky), 0 failed, 0 skipped\n"), "{text}");
    assert!(
        text.contains(&format!(
            "flaky (passed on a retry):\n  FLAKY {file} (flaky-start): passed after 1 failed attempt\n"
        )),
        "{text}"
    );
    let doc = check_junit_shape(&xml);
    let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).unwrap();
    assert_eq!((suite.attribute("failures"), suite.attribute("errors")), (Some("0"), Some("0")), "{xml}");
    assert_eq!(
        cases(&doc),
        [("flaky-start".to_owned(), Some(("flakyFailure".to_owned(), "start_daemon".to_owned())))],
        "{xml}"
    );
    let flaky = doc.descendants().find(|n| n.has_tag_name("flakyFailure")).unwrap();
    assert!(flaky.attribute("message").unwrap().starts_with("step 1 `start_daemon`"), "{xml}");
    let trace: String = flaky.descendants().filter_map(|n| n.text()).collect();
    assert!(trace.contains("flaky-nydusd: the first start fails"), "{xml}");
    assert_eq!(report["summary"]["passed"], 1, "{report}");
    assert_eq!(report["summary"]["flaky"], 1, "{report}");
    assert_eq!(report["scenarios"][0]["status"], "flaky", "{report}");
    let attempts: Vec<(&str, bool)> = report["scenarios"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["status"].as_str().unwrap(), a["failure"].is_null()))
        .collect();
    assert_eq!(attempts, [("fail", false), ("pass", true)], "{report}");
}

/// A scenario that fails every attempt fails, with the earlier attempts as
/// `rerunFailure`s and in JSON; retries stop at the limit.
#[test]
fn a_scenario_failing_every_attempt_fails_with_each_attempt_reported() {
    let (code, text, xml, report) = run_with_reports(&["harness/tests/fixtures/wrong-state.yaml", "--retries", "1"]);
    assert_eq!(code, 1, "{text}");
    assert_eq!(text.matches("RETRY harness/tests/fixtures/wrong-state.yaml").count(), 1, "{text}");
    assert!(
        text.contains("FAIL harness/tests/fixtures/wrong-state.yaml (deliberately-wrong-state, attempt 2, "),
        "{text}"
    );
    assert!(text.contains("     attempt 1 failed: step "), "{text}");
    let doc = check_junit_shape(&xml);
    let outcomes: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .flat_map(|c| c.children().filter(|n| n.is_element()).map(|n| n.tag_name().name()))
        .filter(|name| !name.starts_with("system-"))
        .collect();
    assert_eq!(outcomes, ["failure", "rerunFailure"], "{xml}");
    assert_eq!(report["scenarios"][0]["status"], "fail", "{report}");
    assert_eq!(report["scenarios"][0]["attempts"].as_array().unwrap().len(), 2, "{report}");
    assert_eq!(report["summary"]["flaky"], 0, "{report}");
}

/// `--max-fail N` stops starting scenarios after N failures, not after the first.
#[test]
fn max_fail_stops_after_that_many_failures() {
    let (code, text, _, report) = run_with_reports(&[
        "harness/tests/fixtures/wrong-state.yaml",
        "harness/tests/fixtures/hostile-names.yaml",
        "scenarios/lifecycle/start-running.yaml",
        "--jobs",
        "1",
        "--max-fail",
        "2",
    ]);
    assert_eq!(code, 1, "{text}");
    let statuses: Vec<&str> =
        report["scenarios"].as_array().unwrap().iter().map(|s| s["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["fail", "fail", "not_run"], "{report}");
    assert!(text.contains("stopped after 2 failures; 1 scenarios not run"), "{text}");
}

#[test]
fn an_interrupted_run_reports_every_scenario_and_is_not_green() {
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let child = Command::new(testkit::bin_exe!("harness"))
        .args([
            "run",
            "harness/tests/fixtures/long-sleep.yaml",
            "scenarios/lifecycle/start-running.yaml",
            "--jobs",
            "1",
        ])
        .args(["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()])
        .arg("--bundles")
        .arg(dir.path().join("bundles"))
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The long scenario is running once its root exists; then Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let pid = child.id().to_string();
    let started = || {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()).any(|e| {
            std::fs::read_to_string(e.path().join("stat"))
                .is_ok_and(|s| s.split_whitespace().nth(3) == Some(pid.as_str()))
        })
    };
    while !started() {
        assert!(std::time::Instant::now() < deadline, "the scenario's daemon never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    keep_copies(&json, &junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = check_junit_shape(&xml);
    let cases = cases(&doc);
    // Before: nothing had finished, so the report held no test case and read as green.
    assert_eq!(cases.len(), 2, "{xml}");
    assert!(cases.iter().all(|(_, o)| o == &Some(("error".into(), "interrupted".into()))), "{xml}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_json_against_its_schema(&report);
    assert_eq!(report["interrupted"], "SIGINT");
    assert_eq!(report["summary"]["interrupted"], 2, "{report}");
}

#[test]
fn the_published_report_schema_is_the_generated_one() {
    let (code, generated) = harness(&["schema", "--report"]);
    assert_eq!(code, 0);
    let committed = std::fs::read_to_string(repo().join("docs/report.schema.json")).unwrap();
    assert_eq!(
        committed.trim(),
        generated.trim(),
        "docs/report.schema.json is out of date: run `cargo run -p harness -- schema --report > docs/report.schema.json`"
    );
}

#[test]
fn list_shows_what_a_run_selects_and_why_a_scenario_would_skip() {
    let (code, text) = harness(&["list", "scenarios", "--filter", "start-running", "--filter", "fscache"]);
    assert_eq!(code, 0, "{text}");
    let header = text.lines().next().unwrap();
    for column in ["PATH", "NAME", "TAGS", "TARGETS", "REQUIRES", "HERE (mock)"] {
        assert!(header.contains(column), "{text}");
    }
    let line = text.lines().find(|l| l.starts_with("lifecycle/start-running.yaml ")).expect("the filtered scenario");
    assert!(
        line.contains("start-reaches-running") && line.contains("lifecycle,dedicated") && line.ends_with("runs"),
        "{line}"
    );
    // The second filter selected the fscache scenarios too; those that require on-demand
    // fscache cannot run where the kernel lacks it, and say why.
    let fscache: Vec<&str> = text.lines().filter(|l| l.starts_with("fscache/")).collect();
    assert!(!fscache.is_empty(), "{text}");
    if let Err(reason) = host_facts::Requirement::Cachefiles.check() {
        let needing: Vec<&&str> = fscache.iter().filter(|l| l.contains("fscache ") || l.contains(",fscache")).collect();
        // fscache/bind-mount-unbind requires fscache; an empty list would pass `all` vacuously.
        assert!(!needing.is_empty(), "{text}");
        assert!(needing.iter().all(|l| l.contains(&format!("skip: {reason}"))), "{text}");
    }
    let (code, json) = harness(&["list", "scenarios/lifecycle/start-running.yaml", "--json"]);
    assert_eq!(code, 0, "{json}");
    let listed: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(listed["targets"], serde_json::json!(["mock", "real"]));
    assert_eq!(listed["skip"], serde_json::Value::Null);
    let (code, text) = harness(&["list", "scenarios", "--filter", "start-running", "--exact"]);
    assert_eq!(code, 5, "an exact filter matches no part of a name: {text}");
    assert!(text.contains("no scenario selected by --filter start-running --exact"), "{text}");
}

#[test]
fn completions_man_page_and_exit_codes_come_from_the_one_definition() {
    let (code, bash) = harness(&["completions", "bash"]);
    assert_eq!(code, 0, "{bash}");
    assert!(bash.contains("_harness()") && bash.contains("--keep-going") && bash.contains("list"), "{bash}");
    let (code, zsh) = harness(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef harness"), "{zsh}");
    let (code, man) = harness(&["man"]);
    assert_eq!(code, 0);
    assert!(man.contains(".TH harness 1") && man.contains("Exit codes"), "{man}");
    let (code, help) = harness(&["--help"]);
    assert_eq!(code, 0);
    for line in ["130  interrupted by SIGINT", "5    no scenario was selected", "3    a scenario file is invalid"] {
        assert!(help.contains(line), "{help}");
    }
    let (code, help) = harness(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(help.contains("--color <COLOR>") && help.contains("--filter <TEXT>") && help.contains("--exact"), "{help}");
}

#[test]
fn colour_follows_the_flag_and_never_reaches_a_pipe_by_default() {
    let (_, plain) = harness(&["run", "scenarios/lifecycle/start-running.yaml"]);
    assert!(plain.contains("PASS lifecycle") || plain.contains("PASS scenarios/lifecycle"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    let (_, coloured) = harness(&["run", "scenarios/lifecycle/start-running.yaml", "--color", "always"]);
    assert!(coloured.contains("\u{1b}[32mPASS\u{1b}[0m"), "{coloured:?}");
}

#[test]
fn a_slow_scenario_is_named_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(&file, "version: 1\nname: slow\nsteps:\n  - sleep: { ms: 1500 }\n").unwrap();
    // Off a terminal (the output is a pipe here), as in CI.
    let (code, text) = harness(&["run", file.to_str().unwrap(), "--slow-after", "0.3"]);
    assert_eq!(code, 0, "{text}");
    let slow = text.lines().position(|l| l.starts_with("SLOW [> 0.3 s] ") && l.ends_with("slow.yaml (slow)"));
    let pass = text.lines().position(|l| l.starts_with("PASS "));
    assert!(slow.is_some() && slow < pass, "{text}");
}

/// A killed run never reads green (issue 26): its reports say "not finished" from before
/// its first scenario; before, the previous run's green report survived a SIGKILL as it was.
#[test]
fn a_killed_run_leaves_reports_that_are_not_green_never_the_previous_run_s() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let reports = ["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()];
    let mut green = vec!["run", "scenarios/lifecycle/start-running.yaml"];
    green.extend(reports);
    let (code, text) = harness(&green);
    assert_eq!(code, 0, "{text}");
    let bundles = tempfile::tempdir().unwrap();
    let mut killed = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "harness/tests/fixtures/long-sleep.yaml", "--bundles"])
        .arg(bundles.path())
        .args(reports)
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let written = |path: &Path| std::fs::read_to_string(path).unwrap_or_default().contains("long-sleep");
    while !written(&json) || !written(&junit) {
        assert!(std::time::Instant::now() < deadline, "the run never wrote its first report");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(killed.id() as i32), nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    let _ = killed.wait();
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_json_against_its_schema(&report);
    assert_eq!(report["summary"]["interrupted"], 1, "{report}");
    assert_eq!(report["summary"]["passed"], 0, "{report}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = check_junit_shape(&xml);
    let verdicts = cases(&doc);
    assert_eq!(verdicts.len(), 1, "{xml}");
    let (element, kind) = verdicts[0].1.clone().expect("an error, not a pass");
    assert_eq!((element.as_str(), kind.as_str()), ("error", "interrupted"), "{xml}");
    assert!(xml.contains("had not ended"), "{xml}");
}

/// A run refused before it starts (a missing file, invalid YAML, a filter that selects
/// nothing, no room for socket paths) replaces both reports with one that says so, valid
/// and not green, and creates nothing else: no empty report, no bundle directory. The
/// reports were left empty, and an empty `harness-failures/` in TMPDIR, before.
#[test]
fn a_refused_run_leaves_reports_that_say_why_and_nothing_else() {
    let invalid = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
    std::fs::write(invalid.path(), "version: 1\nname: x\nsteps: [\n").unwrap();
    let long_tmp = tempfile::tempdir().unwrap();
    let long_tmp = long_tmp.path().join("t".repeat(90));
    std::fs::create_dir(&long_tmp).unwrap();
    // What is refused, the arguments, the TMPDIR, the exit code, and what the reason says.
    type Refusal<'a> = (&'a str, Vec<&'a str>, Option<&'a Path>, i32, &'a str);
    let refusals: [Refusal<'_>; 4] = [
        ("missing file", vec!["scenarios/no-such-file.yaml"], None, 3, "no-such-file.yaml"),
        ("invalid YAML", vec![invalid.path().to_str().unwrap()], None, 3, ":3:8: unclosed bracket"),
        ("no selection", vec!["scenarios", "--filter", "no-scenario-has-this-name"], None, 5, "no scenario selected"),
        ("socket room", vec!["scenarios/lifecycle/start-running.yaml"], Some(&long_tmp), 2, "too long"),
    ];
    for (what, args, tmpdir, code, reason) in refusals {
        let dir = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
        // The previous run's green reports.
        std::fs::write(&json, r#"{"summary":{"passed":1,"failed":0}}"#).unwrap();
        std::fs::write(&junit, r#"<testsuites tests="1" failures="0" errors="0"/>"#).unwrap();
        let out = Command::new(testkit::bin_exe!("harness"))
            .arg("run")
            .args(&args)
            .args(["--json", json.to_str().unwrap(), "--junit", junit.to_str().unwrap()])
            .env("TMPDIR", tmpdir.unwrap_or(tmp.path()))
            .current_dir(repo())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
        keep_copies(&json, &junit);
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        check_json_against_its_schema(&report);
        assert_eq!(report["summary"]["passed"], 0, "{what}: {report}");
        assert_eq!(report["summary"]["failed"], 1, "{what}: {report}");
        // A file that cannot be used is an entry of its own (the others, had there been any,
        // would have run); the rest refuse the whole run.
        let file_error = code == 3;
        let (prefix, junit_kind) = if file_error {
            ("not run: not a valid scenario: ", "invalid")
        } else {
            ("not run: the run was refused before it started: ", "refused")
        };
        let why = report["scenarios"][0]["reason"].as_str().unwrap_or_default();
        assert!(why.starts_with(prefix), "{what}: {why}");
        assert!(why.contains(reason), "{what}: {why}");
        let xml = std::fs::read_to_string(&junit).unwrap();
        let doc = check_junit_shape(&xml);
        let verdicts = cases(&doc);
        assert_eq!(verdicts.len(), 1, "{what}: {xml}");
        let (element, kind) = verdicts[0].1.clone().expect("an error, not a pass");
        assert_eq!((element.as_str(), kind.as_str()), ("error", junit_kind), "{what}: {xml}");
        let made: Vec<_> =
            std::fs::read_dir(tmpdir.unwrap_or(tmp.path())).unwrap().flatten().map(|e| e.path()).collect();
        assert!(made.is_empty(), "{what}: the refused run made {made:?}");
        let beside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(beside.len(), 2, "{what}: only the two reports: {beside:?}");
    }
}

/// A failing scenario's JUnit says why in the line CI summaries show (expected and
/// observed in `message`), where (`file` and `line` attributes; the classname without
/// `.yaml`, which Jenkins read as a class), the whole timeline in `system-out` and the
/// daemons' logs in `system-err`; the JSON timeline is objects; under GitHub Actions an
/// `::error` annotation points at the failing step. Before, `message` had no expected or
/// observed, the timeline stayed on the runner's disk past its last 25 lines, and the
/// daemons' logs were in the bundle only.
#[test]
fn a_failing_scenario_s_reports_show_why_where_and_the_whole_timeline() {
    let dir = tempfile::tempdir().unwrap();
    // A daemon that says something on stderr and dies at start.
    let wrapper = dir.path().join("dying-nydusd");
    std::fs::write(&wrapper, "#!/bin/sh\necho 'dying-nydusd: out of luck' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (json, junit) = (dir.path().join("r.json"), dir.path().join("r.xml"));
    let out = Command::new(testkit::bin_exe!("harness"))
        .args([
            "run",
            "harness/tests/fixtures/wrong-state.yaml",
            "harness/tests/fixtures/flaky-start.yaml",
            "--keep-going",
        ])
        .arg("--nydusd")
        .arg(&wrapper)
        .arg("--json")
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .arg("--bundles")
        .arg(dir.path().join("bundles"))
        .env("GITHUB_ACTIONS", "true")
        .current_dir(repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    keep_copies(&json, &junit);
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = check_junit_shape(&xml);
    let case = doc.descendants().find(|n| n.attribute("name") == Some("flaky-start")).unwrap();
    assert_eq!(case.attribute("classname"), Some("harness/tests/fixtures/flaky-start"), "{xml}");
    assert_eq!(case.attribute("file"), Some("harness/tests/fixtures/flaky-start.yaml"), "{xml}");
    assert_eq!(case.attribute("line"), Some("11"), "{xml}");
    let failure = case.children().find(|n| n.has_tag_name("failure")).unwrap();
    let message = failure.attribute("message").unwrap();
    assert!(message.starts_with("step 1 `start_daemon` at harness/tests/fixtures/flaky-start.yaml:11:"), "{message}");
    assert!(
        message.contains("; expected: success; observed: daemon d1: the process exited (exit status: 3)"),
        "{message}"
    );
    let system =
        |tag: &str| case.children().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).unwrap_or_default().to_owned();
    let system_out = system("system-out");
    assert!(system_out.contains("harness      step 1 `start_daemon` (line 11)"), "{xml}");
    assert!(system_out.contains("harness      step 1 failed: start_daemon d1 failed"), "{xml}");
    let system_err = system("system-err");
    assert!(system_err.contains("==> logs/daemons.log (last "), "{xml}");
    assert!(system_err.contains("dying-nydusd: out of luck"), "{xml}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    check_json_against_its_schema(&report);
    assert_eq!(report["format_version"], 2);
    let flaky = report["scenarios"].as_array().unwrap().iter().find(|s| s["name"] == "flaky-start").unwrap();
    let timeline = flaky["failure"]["timeline"].as_array().unwrap();
    assert_eq!(
        (timeline[0]["source"].as_str(), timeline[0]["kind"].as_str()),
        (Some("harness"), Some("step")),
        "{flaky}"
    );
    assert_eq!(timeline[0]["fields"]["keyword"], "start_daemon", "{flaky}");
    assert_eq!(timeline.last().unwrap()["kind"], "step_failed", "{flaky}");
    assert!(flaky["failure"]["logs"][0]["text"].as_str().unwrap().contains("dying-nydusd: out of luck"), "{flaky}");
    assert!(
        text.contains("::error file=harness/tests/fixtures/flaky-start.yaml,line=11,title=flaky-start failed::step 1 `start_daemon` at harness/tests/fixtures/flaky-start.yaml:11: start_daemon d1 failed; expected: success; observed: daemon d1: the process exited (exit status: 3)"),
        "{text}"
    );
}

/// `--json -` writes the report on standard output, and the run's own lines go to stderr;
/// no file named `-` appears (before, one did).
#[test]
fn a_report_to_dash_goes_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "scenarios/lifecycle/start-running.yaml", "--json", "-", "--bundles"])
        .arg(dir.path())
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    check_json_against_its_schema(&report);
    assert_eq!(report["summary"]["passed"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("PASS scenarios/lifecycle/start-running.yaml"));
    assert!(!repo().join("-").exists());
    // Both on standard output: refused before anything runs, and nothing written there
    // (the adversarial trial saw both refusal reports on stdout).
    let out = Command::new(testkit::bin_exe!("harness"))
        .args(["run", "scenarios/lifecycle/start-running.yaml", "--json", "-", "--junit", "-"])
        .current_dir(repo())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("only one report can go to standard output"), "{stderr}");
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
}
