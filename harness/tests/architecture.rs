//! The workspace's shape, checked where it is easy to break by accident: which crate may
//! depend on which.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .current_dir(testkit::manifest_dir!())
        .output()
        .unwrap_or_else(|e| panic!("cargo {args:?}: {e}"));
    assert!(output.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The mock must be testable against daemon-core without sharing its code, and must not
/// carry the client's HTTP stack or the store's database, even in its tests.
#[test]
fn the_mock_depends_on_neither_daemon_core_nor_its_http_client_nor_its_store() {
    let tree = cargo(&["tree", "-p", "mock-nydusd", "-e", "normal,build,dev", "--prefix", "none"]);
    let names: BTreeSet<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
    for forbidden in ["daemon-core", "hyper", "hyperlocal", "rusqlite", "harness"] {
        assert!(!names.contains(forbidden), "mock-nydusd depends on {forbidden}:\n{tree}");
    }
    assert!(names.contains("nydusd-api"), "the wire crate is the mock's contract");
}

/// No cycle among workspace crates, dev-dependencies included: each crate can be tested
/// against the ones below it only.
#[test]
fn workspace_crates_depend_on_each_other_without_a_cycle() {
    let metadata: serde_json::Value =
        serde_json::from_str(&cargo(&["metadata", "--format-version", "1", "--no-deps"])).unwrap();
    let members: BTreeSet<String> =
        metadata["packages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    let edges: BTreeMap<String, Vec<String>> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| members.contains(d) && Some(d.as_str()) != p["name"].as_str())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect();
    // Depth-first search; a crate met again while still on the path closes a cycle.
    fn visit(node: &str, edges: &BTreeMap<String, Vec<String>>, path: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("dependency cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        path.push(node.to_owned());
        for next in &edges[node] {
            visit(next, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for member in &members {
        visit(member, &edges, &mut Vec::new(), &mut done);
    }
    assert!(members.len() >= 6, "{members:?}");
}

/// Every `.rs` file of the workspace crates and the fuzz targets, relative to the root.
fn source_files(root: &std::path::Path) -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        if entry.path().join("Cargo.toml").is_file() {
            for part in ["src", "tests", "benches", "fuzz_targets"] {
                walk(&entry.path().join(part), root, &mut files);
            }
        }
    }
    files
}

/// docs/ARCHITECTURE.md gives every source file one line, starting with its path; a new
/// file without one, or a line for a file that is gone, fails here.
#[test]
fn the_architecture_document_lists_every_source_file_and_only_those() {
    let manifest = testkit::manifest_dir!();
    let root = manifest.parent().unwrap();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let listed: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|word| word.ends_with(".rs") && word.contains('/'))
        .map(str::to_owned)
        .collect();
    let files = source_files(root);
    let missing: Vec<&String> = files.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&files).collect();
    assert!(missing.is_empty(), "source files without a line in docs/ARCHITECTURE.md: {missing:?}");
    assert!(stale.is_empty(), "docs/ARCHITECTURE.md lists files that do not exist: {stale:?}");
    assert!(files.len() > 100, "found only {} files", files.len());
}

/// The names a crate's `src/lib.rs` makes public at its top: `pub mod`, `pub use` (each
/// name, or its `as` rename) and `pub` items. Modules public only with a feature are
/// declared through a macro, not as `pub mod`, and so are not counted.
fn public_names(lib: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut statement = String::new();
    for line in lib.lines() {
        if statement.is_empty() && !line.starts_with("pub ") {
            continue;
        }
        statement.push_str(line.trim());
        statement.push(' ');
        let ends = statement.starts_with("pub use ") && statement.trim_end().ends_with(';')
            || !statement.starts_with("pub use ");
        if !ends {
            continue;
        }
        let item = std::mem::take(&mut statement);
        if let Some(used) = item.strip_prefix("pub use ") {
            let used = used.trim().trim_end_matches(';');
            let list = match (used.find('{'), used.rfind('}')) {
                (Some(open), Some(close)) => used[open + 1..close].to_owned(),
                _ => used.rsplit("::").next().unwrap_or(used).to_owned(),
            };
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let name = name.rsplit(" as ").next().unwrap_or(name);
                names.insert(name.rsplit("::").next().unwrap_or(name).to_owned());
            }
            continue;
        }
        let words: Vec<&str> = item
            .split(|c: char| c.is_whitespace() || c == '(' || c == '<' || c == ':' || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        let kinds = ["mod", "fn", "const", "static", "struct", "enum", "trait", "type"];
        if let Some(at) = words.iter().position(|w| kinds.contains(w)) {
            names.insert(words[at + 1].to_owned());
        }
    }
    names
}

/// The names in backticks on a section's `Public surface:` paragraph.
fn documented_surface(doc: &str, krate: &str) -> Option<BTreeSet<String>> {
    let section = doc.split("\n## ").find(|s| s.starts_with(krate) && s[krate.len()..].starts_with('\n'))?;
    let start = section.find("Public surface:")?;
    let paragraph = section[start..].split("\n\n").next()?;
    Some(paragraph.split('`').skip(1).step_by(2).map(str::to_owned).collect())
}

/// Each crate's section in docs/ARCHITECTURE.md names exactly what its `lib.rs` makes
/// public (the mock's too): a new public item, or a doc naming one that is gone, fails.
#[test]
fn the_architecture_document_names_each_crate_s_public_surface() {
    let root = testkit::manifest_dir!().parent().unwrap().to_owned();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let lib = entry.path().join("src/lib.rs");
        if !entry.path().join("Cargo.toml").is_file() || !lib.is_file() {
            continue;
        }
        let krate = entry.file_name().to_string_lossy().into_owned();
        let public = public_names(&std::fs::read_to_string(&lib).unwrap());
        let documented = documented_surface(&doc, &krate)
            .unwrap_or_else(|| panic!("docs/ARCHITECTURE.md has no `Public surface:` for {krate}"));
        assert_eq!(documented, public, "{krate}: documented (left) and public in src/lib.rs (right)");
        checked += 1;
    }
    assert!(checked >= 9, "checked {checked} crates");
}

#[test]
fn public_names_reads_every_kind_of_item() {
    let lib = "pub mod a;\nmod hidden;\npub use b::{C, D as E};\npub use f::G;\npub use h as i;\npub use j::{\n    K,\n    L,\n};\npub fn m(x: u8) {}\npub async fn n() {}\npub const O: u8 = 1;\npub struct P<T>(T);\npub(crate) fn q() {}\n";
    let names: Vec<String> = public_names(lib).into_iter().collect();
    assert_eq!(names, ["C", "E", "G", "K", "L", "O", "P", "a", "i", "m", "n"]);
}
