//! Steps that only look: at the journals, the store, the host's mounts, processes and
//! open files, and at whether a daemon serves what its records say.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::{Explained, StepKind, name};
use super::{REAPED_WITHIN, sorted};
use crate::runner::Run;
use crate::runner::outcome::StepError;
use crate::runner::teardown::{mounts_under, processes_naming};
use crate::scenario::steps::*;

fn pattern_matches(pattern: &JournalPattern, entry: &Value) -> bool {
    let text = |k: &str, want: &Option<String>| want.as_ref().is_none_or(|w| entry[k].as_str() == Some(w.as_str()));
    text("event", &pattern.event)
        && text("method", &pattern.method)
        && text("path", &pattern.path)
        && text("to", &pattern.to)
        && pattern.status.is_none_or(|s| entry["status"].as_u64() == Some(u64::from(s)))
}

fn describe_pattern(pattern: &JournalPattern) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("event", &pattern.event), ("method", &pattern.method), ("path", &pattern.path), ("to", &pattern.to)]
    {
        if let Some(v) = v {
            parts.push(format!("{k}={v}"));
        }
    }
    if let Some(s) = pattern.status {
        parts.push(format!("status={s}"));
    }
    format!("{{{}}}", parts.join(" "))
}

/// How long `expect_consistent` gives the manager to settle a doubtful mount.
const CONSISTENT_WITHIN: Duration = Duration::from_secs(3);

/// The `expect_journal` step (its doc: the format's `Step::ExpectJournal`).
pub(crate) struct ExpectJournal;

impl StepKind for ExpectJournal {
    type Args = ExpectJournalStep;

    fn explain(s: &ExpectJournalStep) -> Explained {
        Explained::new(
            "harness".into(),
            s.daemon.as_ref().map(name).unwrap_or_else(|| "harness".into()),
            format!("expect journal sequence of {} entries", s.sequence.len()),
        )
    }

    async fn run(run: &Run<'_>, s: &ExpectJournalStep) -> Result<(), StepError> {
        let id = s.daemon.as_ref().map(|d| d.value.as_str());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(s.timeout_ms.unwrap_or(0));
        let entries = loop {
            let entries = run.target().daemon_entries(run, id);
            match missing_from(&s.sequence, &entries) {
                None => break entries,
                Some(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(JOURNAL_POLL).await;
                }
                Some(i) => {
                    let expected: Vec<String> = s.sequence.iter().map(describe_pattern).collect();
                    let within = s.timeout_ms.map(|ms| format!(" within {ms} ms")).unwrap_or_default();
                    return Err(StepError::mismatch(
                        format!(
                            "journal{} lacks entry {} of the sequence after the ones before it{within}",
                            id.map(|d| format!(" of {d}")).unwrap_or_default(),
                            i + 1
                        ),
                        expected.join(" … "),
                        format!("{} entries; missing {}", entries.len(), describe_pattern(&s.sequence[i])),
                    ));
                }
            }
        };
        if let Some(found) = s.absent.iter().find_map(|p| entries.iter().find(|e| pattern_matches(p, e))) {
            return Err(StepError::mismatch(
                "journal has an entry it must not have",
                "no such entry",
                found.to_string(),
            ));
        }
        Ok(())
    }
}

/// How often `expect_journal` with a `timeout_ms` reads the journals again: they are
/// files other processes append to, with nothing to wait on.
const JOURNAL_POLL: Duration = Duration::from_millis(10);

/// The index of the first pattern of `sequence` that `entries` lack in order, if any.
fn missing_from(sequence: &[JournalPattern], entries: &[Value]) -> Option<usize> {
    let mut next = 0;
    for (i, pattern) in sequence.iter().enumerate() {
        match entries[next..].iter().position(|e| pattern_matches(pattern, e)) {
            Some(offset) => next += offset + 1,
            None => return Some(i),
        }
    }
    None
}

/// The `expect_store` step (its doc: the format's `Step::ExpectStore`).
pub(crate) struct ExpectStore;

impl StepKind for ExpectStore {
    type Args = ExpectStoreStep;

    fn explain(_: &ExpectStoreStep) -> Explained {
        Explained::new("harness".into(), "manager".into(), "expect store contents".into())
    }

    async fn run(run: &Run<'_>, s: &ExpectStoreStep) -> Result<(), StepError> {
        let store_holder;
        let manager = run.state().manager.clone();
        let store = match &manager {
            Some(m) => m.store(),
            None => {
                store_holder = daemon_core::store::Store::open(run.root.path()).map_err(|e| e.to_string())?;
                &store_holder
            }
        };
        if let Some(wanted) = &s.daemons {
            let have = sorted(store.daemons().map_err(|e| e.to_string())?.into_iter().map(|d| d.id).collect());
            if have != sorted(wanted.clone()) {
                return Err(StepError::mismatch(
                    "daemons in the store",
                    format!("{:?}", sorted(wanted.clone())),
                    format!("{have:?}"),
                ));
            }
        }
        if let Some(wanted) = &s.instances {
            let have: Vec<String> =
                store.instances().map_err(|e| e.to_string())?.into_iter().map(|r| r.snapshot_id).collect();
            if &have != wanted {
                return Err(StepError::mismatch(
                    "instances in the store (sequence order)",
                    format!("{wanted:?}"),
                    format!("{have:?}"),
                ));
            }
        }
        Ok(())
    }
}

/// The `expect_mounted` step (its doc: the format's `Step::ExpectMounted`).
pub(crate) struct ExpectMounted;

impl StepKind for ExpectMounted {
    type Args = ExpectMountedStep;

    fn explain(s: &ExpectMountedStep) -> Explained {
        Explained::new(
            "harness".into(),
            "harness".into(),
            format!("expect {} {}", s.path.value, if s.mounted { "mounted" } else { "not mounted" }),
        )
    }

    async fn run(run: &Run<'_>, s: &ExpectMountedStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let mounted = daemon_core::mount::is_mounted(&path).map_err(|e| e.to_string())?;
        let word = |b: bool| if b { "mounted" } else { "not mounted" };
        if mounted == s.mounted {
            Ok(())
        } else {
            Err(StepError::mismatch(format!("{}", path.display()), word(s.mounted), word(mounted)))
        }
    }
}

/// The `expect_no_leaks` step (its doc: the format's `Step::ExpectNoLeaks`).
pub(crate) struct ExpectNoLeaks;

impl StepKind for ExpectNoLeaks {
    type Args = Empty;

    fn explain(_: &Empty) -> Explained {
        Explained::new("harness".into(), "harness".into(), "expect no leaked process or mount".into())
    }

    async fn run(run: &Run<'_>, _: &Empty) -> Result<(), StepError> {
        run.expect_no_leaks().await
    }
}

/// The `expect_consistent` step (its doc: the format's `Step::ExpectConsistent`).
pub(crate) struct ExpectConsistent;

impl StepKind for ExpectConsistent {
    type Args = DaemonRef;

    fn explain(s: &DaemonRef) -> Explained {
        Explained::new(
            "harness".into(),
            name(&s.daemon),
            "expect the daemon to serve exactly its recorded instances".into(),
        )
    }

    async fn run(run: &Run<'_>, s: &DaemonRef) -> Result<(), StepError> {
        run.expect_consistent(&s.daemon.value).await
    }
}

impl Run<'_> {
    /// The daemon is RUNNING and its mounts are exactly the instances recorded for it,
    /// now or within [`CONSISTENT_WITHIN`]: the manager settles a mount whose outcome it
    /// could not tell in the background, once the daemon answers again.
    async fn expect_consistent(&self, id: &str) -> Result<(), StepError> {
        let deadline = tokio::time::Instant::now() + CONSISTENT_WITHIN;
        loop {
            match self.check_consistent(id).await {
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    async fn check_consistent(&self, id: &str) -> Result<(), StepError> {
        let daemon = self.daemon(id)?;
        let state = daemon.get_state().await?;
        if state != daemon_core::DaemonState::Running {
            return Err(StepError::mismatch(format!("daemon {id} is not running"), "RUNNING", state.to_string()));
        }
        let served: Vec<String> =
            daemon.daemon_info().await?.backend_collection.unwrap_or_default().keys().cloned().collect();
        let manager = self.manager()?;
        let store = manager.store();
        // A dedicated nydusd serves its one instance at `/`, whatever the snapshot.
        let shared = daemon.record().is_shared();
        let recorded: Vec<String> = store
            .instances()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|r| r.daemon_id == id)
            .map(|r| if shared { r.relative_mountpoint() } else { "/".to_owned() })
            .collect();
        let (served, recorded) = (sorted(served), sorted(recorded));
        if served != recorded {
            return Err(StepError::mismatch(
                format!("daemon {id} serves other instances than the store records"),
                format!("recorded {recorded:?}"),
                format!("served {served:?}"),
            ));
        }
        Ok(())
    }

    /// Only the current processes of managed daemons run, and only their host mounts exist:
    /// no zombie, and no live process of a daemon whose recovery the manager gave up on.
    async fn expect_no_leaks(&self) -> Result<(), StepError> {
        let managed = self.state().manager.as_ref().map(|m| m.list_daemons()).unwrap_or_default();
        // A death can be reported (the monitor's connection hung up) a moment before the
        // child's reaper task has run: a zombie is a leak only if it stays one.
        let deadline = tokio::time::Instant::now() + REAPED_WITHIN;
        loop {
            let zombies: Vec<String> = managed
                .iter()
                .filter(|d| d.pid() > 0 && host_facts::process::state(d.pid()) == Some('Z'))
                .map(|d| format!("{} (pid {})", d.id(), d.pid()))
                .collect();
            if zombies.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::mismatch("daemon processes left unreaped", "none", zombies.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let given_up: Vec<String> = managed
            .iter()
            .filter(|d| d.is_alive() && self.last_recovery_failed(&d.id()))
            .map(|d| format!("{} (pid {})", d.id(), d.pid()))
            .collect();
        if !given_up.is_empty() {
            return Err(StepError::mismatch(
                "processes run for daemons whose recovery failed",
                "none",
                given_up.join(", "),
            ));
        }
        let live: Vec<u32> = managed.iter().filter(|d| d.is_alive()).map(|d| d.pid()).collect();
        let root = self.root.path().to_string_lossy().into_owned();
        // On the real target a daemon's process is the injector, and the nydusd it started
        // is its child: part of the daemon, not a stray.
        let strays: Vec<u32> = processes_naming(&root)
            .into_iter()
            .filter(|p| {
                !live.contains(p) && !host_facts::process::parent(*p).is_some_and(|parent| live.contains(&parent))
            })
            .collect();
        if !strays.is_empty() {
            let described: Vec<String> = strays
                .iter()
                .map(|p| format!("{p} ({})", host_facts::process::cmdline(*p).unwrap_or_default().join(" ")))
                .collect();
            return Err(StepError::mismatch("processes outlived their daemons", "none", described.join("; ")));
        }
        let expected_mounts: Vec<PathBuf> =
            managed.iter().filter(|d| d.is_alive()).map(|d| d.host_mountpoint()).collect();
        let stray_mounts: Vec<String> = mounts_under(self.root.path())
            .into_iter()
            .filter(|m| !expected_mounts.contains(m))
            .map(|m| m.display().to_string())
            .collect();
        if !stray_mounts.is_empty() {
            return Err(StepError::mismatch("mounts left behind", "none", stray_mounts.join(", ")));
        }
        // Files under the root still open in the harness, other than the manager's store
        // and the harness's own journal.
        let open_files: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|target| target.starts_with(self.root.path()))
                    .filter(|target| {
                        let name = target.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                        !(name.starts_with("nydus.db") || name == "harness.jsonl" || name == "client.jsonl")
                    })
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !open_files.is_empty() {
            return Err(StepError::mismatch("file descriptors left open", "none", open_files.join(", ")));
        }
        Ok(())
    }
}

/// The `expect_fds` step (its doc: the format's `Step::ExpectFds`).
pub(crate) struct ExpectFds;

impl StepKind for ExpectFds {
    type Args = ExpectFdsStep;

    fn explain(s: &ExpectFdsStep) -> Explained {
        Explained::new(
            "harness".into(),
            "manager".into(),
            format!("expect the supervisors to hold {} session fds", s.supervisor_held),
        )
    }

    async fn run(run: &Run<'_>, s: &ExpectFdsStep) -> Result<(), StepError> {
        let manager = run.manager()?;
        let held = manager.supervisors().map_or(0, |set| set.held_fds());
        if held == s.supervisor_held {
            return Ok(());
        }
        Err(StepError::mismatch(
            "the supervisors hold another number of session fds",
            format!("supervisor_held: {}", s.supervisor_held),
            format!("supervisor_held: {held}"),
        ))
    }
}

/// The `expect_fuse_connection` step (its doc: the format's `Step::ExpectFuseConnection`).
pub(crate) struct ExpectFuseConnection;

impl StepKind for ExpectFuseConnection {
    type Args = ExpectFuseConnectionStep;

    fn explain(s: &ExpectFuseConnectionStep) -> Explained {
        let how = if s.alive { "answers" } else { "is gone or aborted" };
        Explained::new(
            "harness".into(),
            "kernel".into(),
            format!("expect the FUSE connection at {} {how}", s.path.value),
        )
    }

    /// statfs goes to the daemon behind the mount: a live connection answers, a dead or
    /// aborted one makes the kernel answer ENOTCONN or ECONNABORTED. Off the async workers: a connection
    /// whose daemon is stopped would block the call until it runs again.
    async fn run(run: &Run<'_>, s: &ExpectFuseConnectionStep) -> Result<(), StepError> {
        let path = run.path_in_root(&s.path.value);
        let asked = path.clone();
        let answer =
            tokio::task::spawn_blocking(move || nix::sys::statfs::statfs(&asked)).await.map_err(|e| e.to_string())?;
        let alive = match answer {
            Ok(fs) if fs.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC => true,
            // The mount is gone: the plain directory below answers for itself.
            Ok(_) => return Err(StepError::new(format!("{} is not a FUSE mount", s.path.value))),
            // ENOTCONN: the last fd closed; ECONNABORTED: aborted through fusectl.
            Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED) => false,
            Err(e) => {
                return Err(StepError::new(format!("cannot ask {} for its FUSE connection: {e}", path.display())));
            }
        };
        if alive == s.alive {
            return Ok(());
        }
        let says = |alive: bool| if alive { "answers" } else { "ENOTCONN or ECONNABORTED (gone or aborted)" };
        Err(StepError::mismatch(format!("the FUSE connection at {}", s.path.value), says(s.alive), says(alive)))
    }
}

/// The `expect_instance_files` step (its doc: the format's `Step::ExpectInstanceFiles`).
pub(crate) struct ExpectInstanceFiles;

impl StepKind for ExpectInstanceFiles {
    type Args = ExpectInstanceFilesStep;

    fn explain(s: &ExpectInstanceFilesStep) -> Explained {
        Explained::new(
            "harness".into(),
            "kernel".into(),
            format!("read every file of instance {} and compare it with its tree", s.snapshot.value),
        )
    }

    /// Off the async workers, and file by file: a read through a stuck daemon blocks, and
    /// the deadline must still fire.
    async fn run(run: &Run<'_>, s: &ExpectInstanceFilesStep) -> Result<(), StepError> {
        let daemon = run.daemon(&s.daemon.value)?;
        let rafs = daemon.instances().get(&s.snapshot.value).ok_or_else(|| {
            StepError::new(format!(
                "instance {} of {} is not mounted (the manager has no record of it)",
                s.snapshot.value, s.daemon.value
            ))
        })?;
        let tree = run
            .scenario
            .daemons
            .iter()
            .find(|d| d.id.value == s.daemon.value)
            .and_then(|d| d.instances.iter().find(|i| i.snapshot.value == s.snapshot.value))
            .map(|i| i.tree.clone())
            .unwrap_or_default();
        let expected: Vec<(String, Expected)> = tree
            .files()
            .map(|(path, file)| {
                let content = match file {
                    crate::scenario::tree::FileSpec::Text(t) => Expected::Text(t.clone().into_bytes()),
                    crate::scenario::tree::FileSpec::Sized { size } => Expected::Pattern(size.get()),
                };
                (path.to_owned(), content)
            })
            .collect();
        // The record alone proves nothing: an unmounted directory would read as empty.
        let mounted = daemon_core::mount::is_mounted(&rafs.mountpoint).map_err(StepError::failed)?;
        if !mounted {
            return Err(StepError::mismatch(
                format!("instance {} at {}", s.snapshot.value, rafs.mountpoint.display()),
                "mounted",
                "not a mountpoint",
            ));
        }
        let mountpoint = rafs.mountpoint.clone();
        let found = tokio::task::spawn_blocking(move || compare_tree(&mountpoint, &expected))
            .await
            .map_err(|e| e.to_string())?;
        found.map_err(|(what, expected, observed)| {
            StepError::mismatch(
                format!("instance {} at {}: {what}", s.snapshot.value, rafs.mountpoint.display()),
                expected,
                observed,
            )
        })
    }
}

/// A file's declared content.
enum Expected {
    Text(Vec<u8>),
    /// That many bytes of the mock's pattern.
    Pattern(u64),
}

/// The first difference between the files under `root` and `expected`: what, expected,
/// observed. Regular files only count; directories are implied by the paths.
fn compare_tree(root: &std::path::Path, expected: &[(String, Expected)]) -> Result<(), (String, String, String)> {
    use std::io::Read;
    for (path, content) in expected {
        let file = root.join(path);
        let mut reader = std::fs::File::open(&file)
            .map_err(|e| (format!("cannot open {path}"), "a readable file".to_owned(), e.to_string()))?;
        let (want_len, byte_at): (u64, Box<dyn Fn(u64) -> u8>) = match content {
            Expected::Text(bytes) => (bytes.len() as u64, Box::new(move |i| bytes[i as usize])),
            Expected::Pattern(n) => (*n, Box::new(mock_nydusd::pattern_byte)),
        };
        let mut offset = 0u64;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buffer).map_err(|e| {
                (format!("cannot read {path} at byte {offset}"), format!("{want_len} bytes"), e.to_string())
            })?;
            if n == 0 {
                break;
            }
            for (i, &b) in buffer[..n].iter().enumerate() {
                let at = offset + i as u64;
                if at >= want_len {
                    return Err((format!("{path} is too long"), format!("{want_len} bytes"), "more".to_owned()));
                }
                if b != byte_at(at) {
                    return Err((
                        format!("{path} differs at byte {at}"),
                        format!("{:#04x}", byte_at(at)),
                        format!("{b:#04x}"),
                    ));
                }
            }
            offset += n as u64;
        }
        if offset != want_len {
            return Err((format!("{path} is cut short"), format!("{want_len} bytes"), format!("{offset} bytes")));
        }
    }
    let declared: std::collections::HashSet<&str> = expected.iter().map(|(p, _)| p.as_str()).collect();
    let mut extra = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| (format!("cannot list {}", dir.display()), "a directory".to_owned(), e.to_string()))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
                if !declared.contains(relative.as_str()) {
                    extra.push(relative);
                }
            }
        }
    }
    if !extra.is_empty() {
        extra.sort();
        return Err(("holds files its tree does not".to_owned(), "only the tree's files".to_owned(), extra.join(", ")));
    }
    Ok(())
}
