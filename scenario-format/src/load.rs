//! Reading and validating scenario files. Every error names `file:line:column`.

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::conformance::Document;
use super::model::{FORMAT_VERSION, Scenario};
use super::steps::{Declared, Invalid, Step};

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML does not fit the format: every error found, one `file:line:column:` line each.
    #[error("{}", located(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where, in the order of the file (never empty).
        problems: Vec<Invalid>,
    },
}

fn located(path: &Path, problems: &[Invalid]) -> String {
    let lines: Vec<String> =
        problems.iter().map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message)).collect();
    lines.join("\n")
}

impl LoadError {
    /// The file that cannot be used.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. } | Self::Invalid { path, .. } => path,
        }
    }

    /// What is wrong and where (none when the file could not be read).
    pub fn problems(&self) -> &[Invalid] {
        match self {
            Self::Read { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

/// The most errors listed for one file: past them, one line says that there are more.
pub const MAX_REPORTED: usize = 100;

/// The largest scenario file read (the library's largest is a few KiB).
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;

/// Loads and validates one scenario file.
pub fn load(path: &Path) -> Result<Scenario, LoadError> {
    let text = mock_nydusd::script::read_bounded(path, MAX_SCENARIO_BYTES)
        .map_err(|source| LoadError::Read { path: path.to_owned(), source })?;
    parse(path, &text)
}

/// The `vars:` section, read before the rest so `${name}` can be replaced in the text.
#[derive(serde::Deserialize)]
struct Vars {
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
}

/// Replaces `${name}` with the value of `name` from `vars:` (`$${` is a literal `${`); each
/// unknown name is an error at its position. Values must not contain line breaks, so lines
/// and columns stay put.
fn substitute(text: &str) -> Result<String, Vec<Invalid>> {
    if !text.contains("${") {
        return Ok(text.to_owned());
    }
    // The placeholders may not be valid YAML where they stand (`{ id: ${id} }`), so the
    // first read sees them replaced by a plain word.
    let mut plain = String::with_capacity(text.len());
    let mut rest = text;
    while let (Some(start), true) = (rest.find("${"), rest.contains('}')) {
        let Some(end) = rest[start..].find('}') else { break };
        plain.push_str(&rest[..start]);
        plain.push('x');
        rest = &rest[start + end + 1..];
    }
    plain.push_str(rest);
    let vars: Vars = serde_saphyr::from_str(&plain).unwrap_or(Vars { vars: Default::default() });
    let mut out = String::with_capacity(text.len());
    let mut unknown = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            // `$${` is a literal `${`.
            if start > 0 && rest.as_bytes()[start - 1] == b'$' {
                out.push_str(&rest[..start - 1]);
                out.push_str("${");
                rest = &rest[start + 2..];
                continue;
            }
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else { break };
            let name = &rest[start + 2..start + end];
            match vars.vars.get(name) {
                Some(value) if !value.contains('\n') => out.push_str(value),
                _ => {
                    let column = line.len() - rest.len() + start + 1;
                    let known: Vec<&str> = vars.vars.keys().map(String::as_str).collect();
                    unknown.push(Invalid {
                        line: line_no as u64 + 1,
                        column: column as u64,
                        message: format!(
                            "unknown variable `{name}` (vars: {}); values must be one line",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    });
                }
            }
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
    }
    if unknown.is_empty() { Ok(out) } else { Err(unknown) }
}

/// Parses scenario text; `path` is only used in messages. Every error is reported, in
/// the order of the file: serde's (past each broken step, `crate::isolate`), the
/// cross-reference checks on what was read, and the schema's that neither saw.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, LoadError> {
    let invalid = |mut problems: Vec<Invalid>| {
        problems.sort_by_key(|p| (p.line, p.column));
        problems.dedup();
        if problems.len() > MAX_REPORTED {
            let rest = problems.len() - MAX_REPORTED;
            problems.truncate(MAX_REPORTED + 1);
            let last = &mut problems[MAX_REPORTED];
            // A lower bound: reading stops after a number of errors, and so does the schema.
            last.message = format!("at least {rest} more errors from here on (the first {MAX_REPORTED} are listed)");
        }
        LoadError::Invalid { path: path.to_owned(), problems }
    };
    let text = &substitute(text).map_err(invalid)?;
    let document = Document::read(text).map_err(|problem| invalid(vec![problem]))?;
    let schema = document.problems().map_err(|problem| invalid(vec![problem]))?;
    let reading = crate::isolate::read(text, &document, &schema);
    let mut problems = reading.problems;
    if let Some(scenario) = &reading.scenario {
        problems.extend(validate(path, scenario));
    }
    // The schema's errors on a line the loader reported already say it again in other
    // words (a path with `//` breaks the schema's pattern and the loader's path rule).
    let lines: std::collections::HashSet<u64> = problems.iter().map(|p| p.line).collect();
    problems.extend(schema.into_iter().map(|p| p.problem).filter(|p| !lines.contains(&p.line)));
    match reading.scenario {
        Some(scenario) if problems.is_empty() => Ok(scenario),
        _ => Err(invalid(problems)),
    }
}

/// The checks across the file's parts, every error of each.
fn validate(path: &Path, scenario: &Scenario) -> Vec<Invalid> {
    let mut problems = Vec::new();
    if scenario.version != FORMAT_VERSION {
        problems.push(Invalid {
            line: 1,
            column: 1,
            message: format!(
                "unsupported format version {} (this harness reads version {FORMAT_VERSION})",
                scenario.version
            ),
        });
    }
    let origin = path.display().to_string();
    check_daemons(scenario, &origin, &mut problems);
    let ids: Vec<&str> = scenario.daemons.iter().map(|d| d.id.value.as_str()).collect();
    let known = |daemon: &Spanned<String>| {
        if ids.contains(&daemon.value.as_str()) {
            Ok(())
        } else {
            Err(Invalid::at(daemon, format!("unknown daemon `{}` (declared daemons: {})", daemon.value, list(&ids))))
        }
    };
    let declared = Declared {
        daemons: scenario
            .daemons
            .iter()
            .map(|d| (d.id.value.as_str(), d.instances.iter().map(|i| i.snapshot.value.as_str()).collect()))
            .collect(),
    };
    crate::steps::check_groups(&scenario.steps, &mut problems);
    check_steps(&scenario.steps, &|daemon| known(daemon), &declared, &origin, &mut problems);
    for never in &scenario.expect_never {
        if let Some(daemon) = &never.value.daemon {
            problems.extend(known(daemon).err());
        }
    }
    problems
}

/// Each step's own fields, inside groups too: the daemon it names is declared, and what
/// its args check of themselves.
fn check_steps(
    steps: &[Spanned<Step>],
    known: &dyn Fn(&Spanned<String>) -> Result<(), Invalid>,
    declared: &Declared<'_>,
    origin: &str,
    problems: &mut Vec<Invalid>,
) {
    for step in steps {
        let args = step.value.args();
        if let Some(daemon) = args.daemon() {
            problems.extend(known(daemon).err());
        }
        // A check with nothing of its own to point at (line 0) points at the step.
        problems.extend(
            args.check(declared, origin)
                .map_err(|e| match e.line {
                    0 => Invalid { line: step.referenced.line(), column: step.referenced.column(), ..e },
                    _ => e,
                })
                .err(),
        );
        for lane in step.value.lanes() {
            check_steps(lane, known, declared, origin, problems);
        }
    }
}

/// The daemons' own fields: ids usable in a path and declared once, snapshot ids and
/// instance file paths that stay inside, scripts as the mock checks them.
fn check_daemons(scenario: &Scenario, origin: &str, problems: &mut Vec<Invalid>) {
    let ids: Vec<&str> = scenario.daemons.iter().map(|d| d.id.value.as_str()).collect();
    for (i, daemon) in scenario.daemons.iter().enumerate() {
        let id = &daemon.id.value;
        if !daemon_core::daemon::id::is_valid_id(id) {
            problems.push(Invalid::at(
                &daemon.id,
                format!("daemon id {id:?} is not usable in a path (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)"),
            ));
        } else if ids[..i].contains(&id.as_str()) {
            problems.push(Invalid::at(&daemon.id, format!("daemon id {id:?} is declared twice")));
        }
    }
    // Every shared daemon's host mountpoint is the root's `mnt`, as the snapshotter's one
    // shared daemon's is: a second real FUSE session there would hide the first's, and the
    // first one's stop would unmount the second's. On the real target every FUSE-driver
    // daemon is a real FUSE session.
    let real_fuse = scenario.targets.contains(&crate::model::Target::Real)
        && scenario.manager.fs_driver == daemon_core::daemon::FsDriver::Fusedev;
    let shared_fuse = |d: &&crate::model::DaemonSpec| (d.fuse || real_fuse) && d.mode == crate::model::Mode::Shared;
    let mut mounting = scenario.daemons.iter().filter(shared_fuse);
    if let (Some(first), Some(second)) = (mounting.next(), mounting.next()) {
        let why = if first.fuse && second.fuse {
            format!("daemons {} and {} are both shared with `fuse: true`", first.id.value, second.id.value)
        } else {
            format!(
                "daemons {} and {} are both shared, and on the real target (`targets` names it) each serves a \
                 FUSE session",
                first.id.value, second.id.value
            )
        };
        problems.push(Invalid::at(
            &second.id,
            format!(
                "{why}: both would mount on `mnt`, the root's one shared mountpoint, and the second would hide \
                 the first; give one of them `mode: dedicated` (mounted on snapshots/<id>/mnt), or `fuse: false` \
                 and `targets: [mock]`"
            ),
        ));
    }
    for daemon in &scenario.daemons {
        for instance in &daemon.instances {
            let snapshot = &instance.snapshot.value;
            if !daemon_core::daemon::id::is_valid_id(snapshot) {
                problems.push(Invalid::at(
                    &instance.snapshot,
                    format!(
                        "snapshot id {snapshot:?} of daemon {} is not usable in a path (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)",
                        daemon.id.value
                    ),
                ));
            }
            if let Some(domain) = &instance.domain {
                if !daemon_core::daemon::id::is_valid_id(&domain.value) {
                    problems.push(Invalid::at(
                        domain,
                        format!(
                            "domain {:?} of instance {snapshot} is not a usable domain id (allowed: 1-64 of [A-Za-z0-9_.-], not . or ..)",
                            domain.value
                        ),
                    ));
                }
                if scenario.manager.fs_driver != daemon_core::daemon::FsDriver::Fscache {
                    problems.push(Invalid::at(
                        domain,
                        format!(
                            "instance {snapshot}: `domain` is an fscache domain; this scenario's fs_driver is not fscache"
                        ),
                    ));
                }
            }
            for (file, _) in &instance.tree.0 {
                if let Some(why) = super::paths::instance_path_error(&file.value) {
                    problems.push(Invalid::at(
                        file,
                        format!(
                            "file path {:?} of instance {snapshot} {why}: it must stay inside the instance",
                            file.value
                        ),
                    ));
                }
            }
        }
        if let Some(script) = &daemon.script {
            problems.extend(crate::steps::check_script(script, origin).err());
        }
        if let Some(file) = &daemon.script_file {
            if daemon.script.is_some() {
                problems.push(Invalid::at(
                    file,
                    format!("daemon {}: give `script` or `script_file`, not both", daemon.id.value),
                ));
            }
            if let Some(why) = super::paths::host_path_error(&file.value) {
                problems.push(Invalid::at(
                    file,
                    format!(
                        "script_file {:?} {why}: it must stay inside the scenario file's directory (relative, without `..`)",
                        file.value
                    ),
                ));
            }
        }
    }
}

fn list(ids: &[&str]) -> String {
    if ids.is_empty() { "none".to_owned() } else { ids.join(", ") }
}

/// Expands files and directories into the `.yaml` files below them, sorted, skipping the
/// `invalid/` fixtures directory unless it was named directly.
/// The scenario files under `paths` (directories are searched, except `invalid/`), each
/// once. Symbolic links to directories are not followed, so a link loop cannot make a
/// file appear many times; a file reached by two names is listed under the first.
pub fn discover(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    out.sort();
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // The entry's own type: a symbolic link is not a directory here.
        if entry.file_type()?.is_dir() {
            if path.file_name().is_some_and(|n| n == "invalid") {
                continue;
            }
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") && !path.is_dir() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("s.yaml"), text).unwrap_err().to_string()
    }

    /// Groups stand where their order is plain, name what exists, and hold steps; each
    /// mistake is named at its line and column.
    #[test]
    fn groups_are_checked_where_they_stand() {
        let head = "version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n";
        let cases = [
            (
                "  - join: { name: m }\n",
                "s.yaml:5:19: `join` names no background group started before it: `m` (started: none)",
            ),
            (
                "  - background: { name: m, steps: [{ sleep: { ms: 1 } }] }\n  - background: { name: m, steps: [{ sleep: { ms: 1 } }] }\n",
                "s.yaml:6:25: a background group named `m` is already started",
            ),
            (
                "  - background: { name: m, steps: [{ sleep: { ms: 1 } }] }\n  - join: { name: m }\n  - join: { name: m }\n",
                "s.yaml:7:19: background group `m` is already joined",
            ),
            (
                "  - concurrently: [[{ sleep: { ms: 1 } }]]\n",
                "s.yaml:5:5: `concurrently` needs two lanes or more; it has 1",
            ),
            ("  - concurrently: [[{ sleep: { ms: 1 } }], []]\n", "s.yaml:5:5: lane 2 of `concurrently` has no steps"),
            (
                "  - concurrently: [[{ background: { name: m, steps: [{ sleep: { ms: 1 } }] } }], [{ sleep: { ms: 1 } }]]\n",
                "s.yaml:5:21: `background` stands in the scenario's own steps, not inside `concurrently`",
            ),
            (
                "  - concurrently: [[{ start: { daemon: d2 } }], [{ sleep: { ms: 1 } }]]\n",
                "s.yaml:5:40: unknown daemon `d2` (declared daemons: d1)",
            ),
            (
                "  - background: { name: m, steps: [{ read_file: { path: ../../etc/shadow, contains: x } }] }\n",
                "s.yaml:5:57: path \"../../etc/shadow\" has a `..` component",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(steps, wanted)| (steps, wanted, err(&format!("{head}{steps}"))))
            .filter(|(_, wanted, e)| !e.starts_with(*wanted))
            .map(|(steps, wanted, e)| format!("for {steps:?}:\n got {e}\nwant {wanted}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        parse(
            Path::new("s.yaml"),
            &format!("{head}  - background: {{ name: m, steps: [{{ sleep: {{ ms: 1 }} }}] }}\n  - concurrently: [[{{ sleep: {{ ms: 1 }} }}], [{{ start: {{ daemon: d1 }} }}]]\n  - join: {{ name: m }}\n"),
        )
        .expect("a background group, lanes and a join");
    }

    #[test]
    fn unknown_keys_are_located() {
        let e = err("version: 1\nname: x\nsteps:\n  - start: { daemon: d1, colour: red }\ndaemons: [{ id: d1 }]\n");
        assert!(e.starts_with("s.yaml:4:"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn wrong_types_are_located() {
        let e = err("version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - sleep: { ms: soon }\n");
        assert!(e.starts_with("s.yaml:5:"), "{e}");
    }

    #[test]
    fn dangling_daemon_references_name_the_declared_ones() {
        let e = err("version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - start: { daemon: d2 }\n");
        assert!(e.starts_with("s.yaml:5:"), "{e}");
        assert!(e.contains("unknown daemon `d2` (declared daemons: d1)"), "{e}");
    }

    #[test]
    fn unknown_states_list_the_allowed_values() {
        let e =
            err("version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - wait_state: { daemon: d1, state: RUNING }\n");
        assert!(e.contains("RUNNING"), "{e}");
    }

    #[test]
    fn undeclared_instances_and_bad_scripts_are_located() {
        let e = err(
            "version: 1\nname: x\ndaemons: [{ id: d1, mode: shared, instances: [{snapshot: a}] }]\nsteps:\n  - mount_instance: { daemon: d1, snapshot: b }\n",
        );
        assert!(e.starts_with("s.yaml:5:"), "{e}");
        assert!(e.contains("declares no instance `b` (declared instances: a)"), "{e}");
        let e = err(
            "version: 1\nname: x\ndaemons:\n  - id: d1\n    script:\n      rules:\n        - name: r\n          when: {call: {nth: 0}}\n          then: [reply]\nsteps: []\n",
        );
        assert!(e.starts_with("s.yaml:7:"), "{e}");
        assert!(e.contains("mock script: rule 1 (r): when.call"), "{e}");
        let e =
            err("version: 1\nname: x\ndaemons:\n  - id: d1\n    script: { rules: [{ then: [explode] }] }\nsteps: []\n");
        assert!(e.starts_with("s.yaml:5:"), "{e}");
        assert!(e.contains("unknown variant `explode`"), "{e}");
    }

    #[test]
    fn variables_are_substituted_and_unknown_ones_located() {
        let ok = parse(
            Path::new("s.yaml"),
            "version: 1\nname: x\nvars: { id: d1 }\ndaemons: [{ id: ${id} }]\nsteps:\n  - start: { daemon: ${id} }\n",
        )
        .unwrap();
        assert_eq!(ok.daemons[0].id.value, "d1");
        let e = err("version: 1\nname: x\nvars: { id: d1 }\ndaemons: [{ id: ${di} }]\nsteps: []\n");
        assert!(e.starts_with("s.yaml:4:17: unknown variable `di` (vars: id)"), "{e}");
    }

    #[test]
    fn paths_and_ids_cannot_escape_the_root() {
        let e = err(
            "version: 1\nname: x\ndaemons: [{ id: d1, mode: shared, instances: [{snapshot: ../../etc}] }]\nsteps: []\n",
        );
        assert!(e.starts_with("s.yaml:3:58: snapshot id \"../../etc\" of daemon d1 is not usable in a path"), "{e}");
        let e = err("version: 1\nname: x\ndaemons: [{ id: ../d1 }]\nsteps: []\n");
        assert!(e.starts_with("s.yaml:3:17: daemon id \"../d1\" is not usable in a path"), "{e}");
        let e = err("version: 1\nname: x\nsteps:\n  - read_file: { path: ../../etc/shadow, contains: root }\n");
        assert!(
            e.starts_with("s.yaml:4:24: path \"../../etc/shadow\" has a `..` component: it must stay inside"),
            "{e}"
        );
        let e = err("version: 1\nname: x\nsteps:\n  - list_dir: { path: /etc, contains: [] }\n");
        assert!(
            e.starts_with("s.yaml:4:23: path \"/etc\" is absolute: it must stay inside the scenario's root"),
            "{e}"
        );
        let e = err("version: 1\nname: x\nsteps:\n  - expect_mounted: { path: \"mnt\\0\", mounted: true }\n");
        assert!(e.contains("contains a NUL byte"), "{e}");
        let e = err(
            "version: 1\nname: x\ndaemons:\n  - id: d1\n    instances:\n      - snapshot: a\n        tree: { \"a//b\": x }\nsteps: []\n",
        );
        assert!(e.starts_with("s.yaml:7:17: file path \"a//b\" of instance a has an empty component"), "{e}");
        // Two real FUSE sessions on the one shared mountpoint: refused, both named, at the second.
        let e = err(
            "version: 1\nname: x\ndaemons:\n  - { id: d1, mode: shared, fuse: true }\n  - { id: d2, mode: shared, fuse: true }\nsteps: []\n",
        );
        assert!(e.starts_with("s.yaml:5:11: daemons d1 and d2 are both shared with `fuse: true`"), "{e}");
        // On the real target every FUSE-driver daemon is a FUSE session: two shared ones clash.
        let e = err(
            "version: 1\nname: x\ntargets: [mock, real]\ndaemons:\n  - { id: d1, mode: shared }\n  - { id: d2, mode: shared }\nsteps: []\n",
        );
        assert!(e.starts_with("s.yaml:6:11: daemons d1 and d2 are both shared, and on the real target"), "{e}");
        // A dedicated FUSE daemon has a mountpoint of its own.
        parse(
            Path::new("s.yaml"),
            "version: 1\nname: x\ndaemons:\n  - { id: d1, mode: shared, fuse: true }\n  - { id: d2, fuse: true }\nsteps: []\n",
        )
        .unwrap();
        // A reader promise no reader can keep, located at its step.
        let e = err("version: 1\nname: x\nsteps:\n  - stop_reader: { name: r, min_failures: 2, max_failures: 1 }\n");
        assert_eq!(e, "s.yaml:4:5: stop_reader r: min_failures 2 is over max_failures 1");
        // An fscache domain is for fscache instances, and a usable id.
        let e = err(
            "version: 1\nname: x\ndaemons:\n  - id: d1\n    instances:\n      - { snapshot: a, domain: d }\nsteps: []\n",
        );
        assert!(e.contains("`domain` is an fscache domain; this scenario's fs_driver is not fscache"), "{e}");
        let e = err(
            "version: 1\nname: x\nmanager: { fs_driver: fscache }\ndaemons:\n  - id: d1\n    instances:\n      - { snapshot: a, domain: ../x }\nsteps: []\n",
        );
        assert!(e.contains("domain \"../x\" of instance a is not a usable domain id"), "{e}");
        let e = err(
            "version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - replay_client: { daemon: d1, recording: ../../r.jsonl }\n",
        );
        assert!(
            e.starts_with("s.yaml:5:45: recording \"../../r.jsonl\" has a `..` component: it must stay inside the scenario file's directory"),
            "{e}"
        );
        let e = err(
            "version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n  - replay_client: { daemon: d1, recording: r, speed: 0 }\n",
        );
        assert!(
            e.starts_with("s.yaml:5:55: steps[0].replay_client.speed: 0 is less than or equal to the minimum of 0"),
            "{e}"
        );
    }

    /// Past a broken rule, a broken step inside a group, and a broken step written in flow
    /// style (replaced with the block-style step around it), the rest is still read and
    /// checked: a daemon named nowhere is reported too, and the group whose inner step
    /// broke is still there for its `join`.
    #[test]
    fn every_error_is_reported_past_broken_steps_and_rules() {
        let text = "version: 1\nname: x\ndaemons:\n  - id: d1\n    script:\n      rules:\n        - then: [explode]\n        - when: { methd: GET }\n          then: [reply]\nsteps:\n  - background:\n      name: m\n      steps:\n        - sleep: { ms: soon }\n  - join: { name: m }\n  - start: { daemon: d2 }\n  - within: { ms: 5, steps: [{ sleep: { ms: x } }] }\n";
        let e = parse(Path::new("s.yaml"), text).unwrap_err();
        let got: Vec<String> = e.problems().iter().map(|p| format!("{}:{}: {}", p.line, p.column, p.message)).collect();
        let wanted = [
            "7:18: unknown variant `explode`, expected one of",
            "8:19: unknown field `methd`, expected one of",
            "14:24: invalid u64 for field `ms`",
            "16:22: unknown daemon `d2` (declared daemons: d1)",
            "17:45: invalid u64 for field `ms`",
        ];
        assert_eq!(got.len(), wanted.len(), "{got:#?}");
        for (got, wanted) in got.iter().zip(wanted) {
            assert!(got.starts_with(wanted), "got {got}, want {wanted}");
        }
        // Every line of the error names the file.
        assert!(e.to_string().lines().all(|l| l.starts_with("s.yaml:")), "{e}");
    }

    /// A file full of errors lists the first [`MAX_REPORTED`] and says how many more.
    #[test]
    fn a_file_full_of_errors_lists_a_bounded_number() {
        let mut text = "version: 1\nname: x\nsteps:\n".to_owned();
        for _ in 0..300 {
            text.push_str("  - sleep: { ms: \"1\" }\n");
        }
        let e = parse(Path::new("s.yaml"), &text).unwrap_err();
        assert_eq!(e.problems().len(), MAX_REPORTED + 1);
        let last = e.problems().last().unwrap();
        assert_eq!((last.line, last.column), (104, 18));
        assert_eq!(last.message, "at least 100 more errors from here on (the first 100 are listed)");
    }

    /// Found by an adversarial trial: reading stopped after 32 broken steps, so the
    /// unknown daemons after them were never reported, and nothing said so.
    #[test]
    fn cross_checks_still_run_past_many_broken_steps() {
        let mut text = "version: 1\nname: x\ndaemons: [{ id: d1 }]\nsteps:\n".to_owned();
        for i in 0..40 {
            text.push_str(&format!("  - bogus{i}: {{}}\n  - expect_alive: {{ daemon: d9, alive: true }}\n"));
        }
        let e = parse(Path::new("s.yaml"), &text).unwrap_err();
        let unknown = e.problems().iter().filter(|p| p.message.starts_with("unknown daemon `d9`")).count();
        assert_eq!(unknown, 40, "{e}");
        assert_eq!(e.problems().len(), 80, "{e}");
    }

    #[test]
    fn other_versions_are_refused() {
        assert!(err("version: 2\nname: x\nsteps: []\n").contains("unsupported format version 2"));
    }
}
