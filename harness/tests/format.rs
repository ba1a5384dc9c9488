//! One truth for the scenario format: the published schema (`scenarios/schema.json`) and
//! the loader give the same verdict on every file. Each row of the mutation table below
//! is a small scenario with the verdict it must get; an independent validator (the
//! `jsonschema` crate, not schemars) checks it against the schema and the loader reads
//! it, and both must agree with the row. Rows marked `LoaderOnly` are the checks JSON
//! Schema cannot express (references across the document, order between two fields),
//! each with its reason: the loader must reject them and the schema must accept them,
//! so the list stays exactly as long as it has to be.

use std::path::Path;

use harness::scenario;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Valid,
    Invalid,
    /// Invalid, but only the loader can tell: why JSON Schema cannot express it.
    LoaderOnly(&'static str),
}
use Verdict::*;

const HEAD: &str = "version: 1\nname: base\n";
const DAEMON: &str = "daemons:\n  - id: d1\n    mode: shared\n    instances:\n      - snapshot: a\n        tree: { f.txt: hello, big: { size: 4096 } }\n";
const STEP: &str = "steps:\n  - start: { daemon: d1 }\n";

/// The base scenario with `replace` substituted in it, or `extra` added before the steps.
fn with(replace: &[(&str, &str)], extra: &str, steps: &str) -> String {
    let mut text = format!("{HEAD}{extra}{DAEMON}{}", if steps.is_empty() { STEP } else { steps });
    for (from, to) in replace {
        assert!(text.contains(from), "{from:?} is not in the base scenario");
        text = text.replacen(from, to, 1);
    }
    text
}

fn steps(lines: &str) -> String {
    format!("steps:\n  - start: {{ daemon: d1 }}\n{lines}")
}

fn script(body: &str) -> String {
    with(&[("    mode: shared\n", &format!("    mode: shared\n    script:\n{body}"))], "", "")
}

fn table() -> Vec<(&'static str, String, Verdict)> {
    vec![
        ("the base scenario", with(&[], "", ""), Valid),
        (
            "every top-level field",
            with(
                &[],
                "description: d\nupstream: \"784\"\ntags: [a, b]\nrequires: [root, fuse, erofs, mkfs-erofs, fscache]\ntargets: [mock]\nmin_nydusd: \"2.4\"\ntimeout_ms: 1000\nmanager: { recover_policy: failover, fs_driver: fusedev, recovery_attempts: 2 }\n",
                "",
            ),
            Valid,
        ),
        ("version 2", with(&[("version: 1", "version: 2")], "", ""), Invalid),
        ("version as a string", with(&[("version: 1", "version: \"1\"")], "", ""), Invalid),
        ("no version", with(&[("version: 1\n", "")], "", ""), Invalid),
        ("no name", with(&[("name: base\n", "")], "", ""), Invalid),
        ("an unknown top-level field", with(&[], "colour: red\n", ""), Invalid),
        ("an x-anchors section", with(&[], "x-anchors:\n  one: &one { snapshot: b }\n", ""), Valid),
        ("min_nydusd as a number", with(&[], "min_nydusd: 2.4\n", ""), Invalid),
        ("upstream as a number", with(&[], "upstream: 784\n", ""), Invalid),
        ("a tag as a number", with(&[], "tags: [2]\n", ""), Invalid),
        ("an unknown requirement", with(&[], "requires: [gpu]\n", ""), Invalid),
        ("an unknown target", with(&[], "targets: [vm]\n", ""), Invalid),
        ("timeout_ms negative", with(&[], "timeout_ms: -1\n", ""), Invalid),
        ("timeout_ms as a string", with(&[], "timeout_ms: \"100\"\n", ""), Invalid),
        ("recovery_attempts 0", with(&[], "manager: { recovery_attempts: 0 }\n", ""), Invalid),
        ("an unknown recover policy", with(&[], "manager: { recover_policy: reboot }\n", ""), Invalid),
        ("vars with a line break", with(&[], "vars: { a: \"x\\ny\" }\n", ""), Invalid),
        (
            "vars used",
            with(&[("id: d1", "id: \"${d}\""), ("daemon: d1", "daemon: \"${d}\"")], "vars: { d: d1 }\n", ""),
            Valid,
        ),
        (
            "a daemon id with a slash",
            with(&[("id: d1", "id: bad/id"), ("daemon: d1", "daemon: bad/id")], "", ""),
            Invalid,
        ),
        (
            "a daemon id of 65 characters",
            with(
                &[
                    ("id: d1", &format!("id: {}", "a".repeat(65))),
                    ("daemon: d1", &format!("daemon: {}", "a".repeat(65))),
                ],
                "",
                "",
            ),
            Invalid,
        ),
        (
            "a daemon id of 64 characters",
            with(
                &[
                    ("id: d1", &format!("id: {}", "a".repeat(64))),
                    ("daemon: d1", &format!("daemon: {}", "a".repeat(64))),
                ],
                "",
                "",
            ),
            Valid,
        ),
        ("a daemon id `..`", with(&[("id: d1", "id: \"..\""), ("daemon: d1", "daemon: \"..\"")], "", ""), Invalid),
        (
            "duplicate daemon ids",
            with(&[("    instances:\n", "  - id: d1\n    mode: shared\n    instances:\n")], "", ""),
            LoaderOnly("uniqueness of one property across array items"),
        ),
        (
            "a step naming an undeclared daemon",
            with(&[], "", "steps:\n  - start: { daemon: d2 }\n"),
            LoaderOnly("a reference to an id declared elsewhere in the document"),
        ),
        (
            "a mount of an undeclared instance",
            with(&[], "", &steps("  - mount_instance: { daemon: d1, snapshot: b }\n")),
            LoaderOnly("a reference to an id declared elsewhere in the document"),
        ),
        ("an unknown daemon mode", with(&[("mode: shared", "mode: twin")], "", ""), Invalid),
        ("a snapshot `..`", with(&[("snapshot: a", "snapshot: \"..\"")], "", ""), Invalid),
        ("a snapshot with a slash", with(&[("snapshot: a", "snapshot: a/b")], "", ""), Invalid),
        ("a file as a number", with(&[("f.txt: hello", "f.txt: 42")], "", ""), Invalid),
        ("a file of negative size", with(&[("size: 4096", "size: -1")], "", ""), Invalid),
        ("a file past 256 MiB", with(&[("size: 4096", "size: 268435457")], "", ""), Invalid),
        ("a file with an unknown field", with(&[("size: 4096", "size: 4096, mode: 7")], "", ""), Invalid),
        ("a file path with `..`", with(&[("f.txt: hello", "../x: hello")], "", ""), Invalid),
        ("a file path from the instance's root", with(&[("f.txt: hello", "/x: hello")], "", ""), Valid),
        ("a file path with an empty component", with(&[("f.txt: hello", "a//b: hello")], "", ""), Invalid),
        (
            "padding past 16 MiB",
            with(&[("      - snapshot: a\n", "      - snapshot: a\n        padding: 16777217\n")], "", ""),
            Invalid,
        ),
        ("an unknown step", with(&[], "", &steps("  - explode: {}\n")), Invalid),
        (
            "a step with two keywords",
            with(&[], "", &steps("  - { sleep: { ms: 1 }, start: { daemon: d1 } }\n")),
            Invalid,
        ),
        ("sleep", with(&[], "", &steps("  - sleep: { ms: 100 }\n")), Valid),
        ("sleep ms as a string", with(&[], "", &steps("  - sleep: { ms: \"100\" }\n")), Invalid),
        ("sleep ms as a word", with(&[], "", &steps("  - sleep: { ms: soon }\n")), Invalid),
        (
            "wait_state to an unknown state",
            with(&[], "", &steps("  - wait_state: { daemon: d1, state: RUNING }\n")),
            Invalid,
        ),
        (
            "wait_state",
            with(&[], "", &steps("  - wait_state: { daemon: d1, state: RUNNING, timeout_ms: 100 }\n")),
            Valid,
        ),
        (
            "an upgrade with a short commit",
            with(&[], "", &steps("  - upgrade: { daemon: d1, git_commit: xyz }\n")),
            Invalid,
        ),
        (
            "an upgrade",
            with(&[], "", &steps(&format!("  - upgrade: {{ daemon: d1, git_commit: {} }}\n", "ab".repeat(20)))),
            Valid,
        ),
        (
            "read_file of an absolute path",
            with(&[], "", &steps("  - read_file: { path: /etc/shadow, contains: x }\n")),
            Invalid,
        ),
        (
            "read_file leaving the root",
            with(&[], "", &steps("  - read_file: { path: mnt/../../etc, contains: x }\n")),
            Invalid,
        ),
        ("read_file", with(&[], "", &steps("  - read_file: { path: mnt/a/f.txt, contains: hello }\n")), Valid),
        (
            "an api call with an expected error",
            with(
                &[],
                "",
                &steps("  - api: { daemon: d1, call: start, expect_error: { status: 400, kind: daemon } }\n"),
            ),
            Valid,
        ),
        (
            "an expected error of an unknown kind",
            with(&[], "", &steps("  - api: { daemon: d1, call: start, expect_error: { kind: boom } }\n")),
            Invalid,
        ),
        ("a signal step", with(&[], "", &steps("  - signal: { daemon: d1, signal: SIGKILL }\n")), Valid),
        ("an unknown signal", with(&[], "", &steps("  - signal: { daemon: d1, signal: SIGFOO }\n")), Invalid),
        (
            "a wait_event",
            with(&[], "", &steps("  - wait_event: { daemon: d1, event: died, timeout_ms: 100 }\n")),
            Valid,
        ),
        (
            "mount_concurrently past 1024",
            with(&[], "", &steps("  - mount_concurrently: { daemon: d1, snapshot: a, count: 1025 }\n")),
            Invalid,
        ),
        (
            "a script rule",
            script(
                "      rules:\n        - name: r\n          when: { method: GET, path: /api/v1/daemon, call: { nth: 2 }, process: 1 }\n          then: [{ delay_ms: 5 }, reply]\n",
            ),
            Valid,
        ),
        (
            "a script call nth 0",
            script("      rules:\n        - when: { call: { nth: 0 } }\n          then: [reply]\n"),
            Invalid,
        ),
        (
            "a script call every 0",
            script("      rules:\n        - when: { call: { every: 0 } }\n          then: [reply]\n"),
            Invalid,
        ),
        (
            "a script process 0",
            script("      rules:\n        - when: { process: 0 }\n          then: [reply]\n"),
            Invalid,
        ),
        (
            "a script path without a slash",
            script("      rules:\n        - when: { path: api }\n          then: [reply]\n"),
            Invalid,
        ),
        (
            "a script path `*`",
            script("      rules:\n        - when: { path: \"*\" }\n          then: [reply]\n"),
            Valid,
        ),
        ("a script rule without actions", script("      rules:\n        - when: {}\n          then: []\n"), Invalid),
        ("a script exit 256", script("      rules:\n        - then: [{ exit: 256 }]\n"), Invalid),
        ("a script unknown action", script("      rules:\n        - then: [explode]\n"), Invalid),
        (
            "a script action after close",
            script("      rules:\n        - then: [close, reply]\n"),
            LoaderOnly("an order among array items (nothing may follow an action that ends the exchange)"),
        ),
        (
            "a script after_ms not before before_ms",
            script("      rules:\n        - when: { after_ms: 10, before_ms: 5 }\n          then: [reply]\n"),
            LoaderOnly("an order between two numbers"),
        ),
        (
            "die_after with exit and signal",
            script("      startup: { die_after: { ms: 5, exit: 1, signal: SIGKILL } }\n"),
            Invalid,
        ),
        ("die_after with a signal", script("      startup: { die_after: { ms: 5, signal: SIGKILL } }\n"), Valid),
        ("die_after exit 300", script("      startup: { die_after: { ms: 5, exit: 300 } }\n"), Invalid),
        ("no_socket with a socket delay", script("      startup: { no_socket: true, socket_delay_ms: 5 }\n"), Invalid),
        (
            "a respond of status 70000",
            script("      rules:\n        - then: [{ respond: { status: 70000 } }]\n"),
            Invalid,
        ),
    ]
}

fn schema_verdict(validator: &jsonschema::Validator, text: &str) -> Result<(), String> {
    // As YAML 1.2 (and editors) read it: `y` and `on` are text, not booleans.
    let options = serde_saphyr::options! { strict_booleans: true };
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| format!("not YAML: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(&value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&committed_schema()).expect("the schema is a valid JSON Schema")
}

#[test]
fn the_schema_and_the_loader_give_every_mutation_its_verdict() {
    let validator = validator();
    let mut wrong = Vec::new();
    for (label, text, verdict) in table() {
        let loader = scenario::load::parse(Path::new(label), &text).map(drop).map_err(|e| e.to_string());
        let schema = schema_verdict(&validator, &text);
        let (want_loader, want_schema) = match verdict {
            Valid => (true, true),
            Invalid => (false, false),
            LoaderOnly(_) => (false, true),
        };
        if loader.is_ok() != want_loader || schema.is_ok() != want_schema {
            wrong.push(format!(
                "{label} ({verdict:?}): loader {}, schema {}\n{text}",
                loader.err().unwrap_or_else(|| "accepts".into()),
                schema.err().unwrap_or_else(|| "accepts".into())
            ));
        }
    }
    assert!(wrong.is_empty(), "{} of {} rows disagree:\n\n{}", wrong.len(), table().len(), wrong.join("\n\n"));
}

#[test]
fn every_library_scenario_is_valid_to_the_schema_as_written() {
    let validator = validator();
    let dir = testkit::manifest_dir!().join("../scenarios");
    let mut wrong = Vec::new();
    for path in scenario::discover(&[dir]).unwrap() {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(e) = schema_verdict(&validator, &text) {
            wrong.push(format!("{}: {e}", path.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn committed_schema() -> serde_json::Value {
    let text = std::fs::read_to_string(testkit::manifest_dir!().join("../scenarios/schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every property of `node` and below, as `path.key`, with its schema.
fn properties<'a>(node: &'a serde_json::Value, path: &str, out: &mut Vec<(String, &'a serde_json::Value)>) {
    match node {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(props)) = map.get("properties")
                && !path.ends_with("/not")
            {
                out.extend(props.iter().map(|(k, v)| (format!("{path}.{k}"), v)));
            }
            for (k, v) in map {
                properties(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                properties(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_explains_itself_and_nothing_stops_editor_completion() {
    let schema = committed_schema();
    // yaml-language-server offered 3 of 33 steps at `- ` while `"default": null` entries
    // were in the schema, and hover on a step key showed only "`signal`.".
    let text = serde_json::to_string(&schema).unwrap();
    assert!(!text.contains("\"default\":null"), "a `default: null` is back in scenarios/schema.json");
    let mut all = Vec::new();
    properties(&schema, "", &mut all);
    let undescribed: Vec<&String> = all
        .iter()
        .filter(|(_, s)| s.get("description").is_none_or(|d| d.as_str().is_none_or(str::is_empty)))
        .map(|(p, _)| p)
        .collect();
    assert!(undescribed.is_empty(), "fields without a description: {undescribed:?}");
}

#[test]
fn every_step_shows_an_example_that_loads() {
    let schema = committed_schema();
    let steps = schema["definitions"]["Step"]["oneOf"].as_array().unwrap();
    assert!(steps.len() >= 30, "{} steps", steps.len());
    let example_of = |branch: &serde_json::Value| -> String {
        let description = branch["description"].as_str().unwrap_or_default();
        description
            .split("Example: `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
            .unwrap_or_else(|| panic!("no example in {description:?}"))
            .to_owned()
    };
    let background = steps.iter().find(|b| b["title"] == "background").map(example_of).unwrap();
    for branch in steps {
        let example = example_of(branch);
        // A join waits for a group started before it: its example follows background's.
        let before = if branch["title"] == "join" { format!("  {background}\n") } else { String::new() };
        let text = with(&[], "", &format!("steps:\n{before}  {example}\n"));
        if let Err(e) = scenario::load::parse(Path::new("example.yaml"), &text) {
            panic!("the example `{example}` does not load: {e}");
        }
    }
}

#[test]
fn every_library_scenario_names_its_schema_for_editors() {
    let dir = testkit::manifest_dir!().join("../scenarios");
    for path in scenario::discover(std::slice::from_ref(&dir)).unwrap() {
        let depth = path.strip_prefix(&dir).unwrap().components().count() - 1;
        let want = format!("# yaml-language-server: $schema={}schema.json", "../".repeat(depth));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some(want.as_str()), "{}", path.display());
    }
}
