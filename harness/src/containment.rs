//! A run cannot outlive its harness, however the harness dies.
//!
//! * **Namespaces.** As root, `run`, `replay`, `chaos`, `bench` and `diff` run in a PID and
//!   mount namespace of their own: the command's process is the namespace's init, and the
//!   process the user started (the waiter) only waits for it, passing signals on. When
//!   the command's process dies, even by SIGKILL, the kernel kills every process of the
//!   namespace (the daemons, the readers) and drops its mounts (FUSE, erofs), and the
//!   waiter removes the roots left. When the waiter dies, even by SIGKILL (`timeout -s
//!   KILL`, the OOM killer), the command gets SIGTERM (`PR_SET_PDEATHSIG`) and cleans up as
//!   for a Ctrl-C. Where namespaces are not available (not root, a container without
//!   `CAP_SYS_ADMIN`, or `HARNESS_NO_NAMESPACE=1`), the ledger below does the work.
//! * **The ledger.** Every scenario root (and every VM work directory) holds `owner.json`,
//!   naming the harness process by pid and start time, and `processes.jsonl`, a line per
//!   process the run started (pid and start time). Teardown ends exactly those processes,
//!   with their process groups, checked by start time through a pidfd: never a process
//!   that merely names the root on its command line (a user's `tail -f ROOT/…`).
//! * **The sweep.** Each of those commands first looks for roots whose owner is dead (a
//!   SIGKILLed run): it ends the processes their ledger names, detaches their mounts,
//!   removes the root, and says so on stderr. Roots of live harnesses, and files it did
//!   not write, are left alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prefix of every scenario root.
pub const ROOT_PREFIX: &str = "nydus-harness-";

/// A private temporary directory of this run that the sweep removes should the run die
/// without removing it: named with [`ROOT_PREFIX`] and owned by this run (its owner file),
/// so `bench`'s beds and scratch directories go as scenario roots do.
pub fn owned_tempdir(what: &str) -> std::io::Result<(tempfile::TempDir, Ledger)> {
    let dir = testkit::private_tempdir(&format!("{ROOT_PREFIX}{what}-"))?;
    let ledger = Ledger::claim(dir.path())?;
    Ok((dir, ledger))
}
/// The prefix of every VM work directory.
pub const VM_PREFIX: &str = "harness-vm-";
/// The owner file in a root.
pub const OWNER_FILE: &str = "owner.json";
/// The process ledger in a root.
pub const LEDGER_FILE: &str = "processes.jsonl";

/// A process, as it can be told apart from a later one with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22 (clock ticks since boot); `None` if it was gone before
    /// it could be read.
    pub start_time: Option<u64>,
}

impl ProcessId {
    /// Process `pid` as it is now.
    pub fn of(pid: u32) -> Self {
        Self { pid, start_time: host_facts::process::start_time(pid) }
    }

    /// This process.
    pub fn me() -> Self {
        Self::of(std::process::id())
    }

    /// Whether it still runs (not a zombie), as the same process.
    pub fn is_alive(&self) -> bool {
        self.start_time.is_some()
            && host_facts::process::start_time(self.pid) == self.start_time
            && host_facts::process::state(self.pid).is_some_and(|s| s != 'Z')
    }

    /// SIGKILLs it and its process group, if it is still the same process; returns
    /// whether it was. The pidfd is opened first, so the identity checked is the one
    /// signalled even if the pid is reused meanwhile.
    pub fn kill(&self) -> bool {
        let Some(recorded) = self.start_time else { return false };
        let Ok(pidfd) = host_facts::pidfd::PidFd::open(self.pid) else { return false };
        // A zombie is dead already; its reaper has yet to run.
        if host_facts::process::start_time(self.pid) != Some(recorded)
            || host_facts::process::state(self.pid).is_none_or(|s| s == 'Z')
        {
            return false;
        }
        // Its group first (nydusd's own children), then the process itself.
        if nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(self.pid as i32))).ok().map(|g| g.as_raw() as u32)
            == Some(self.pid)
        {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        matches!(pidfd.send_signal(nix::sys::signal::Signal::SIGKILL), Ok(true))
    }
}

/// Who owns a root.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Owner {
    /// The harness process the user started, as the host sees it: in a namespace, the
    /// waiter (the command's own pid is the namespace's).
    harness: ProcessId,
    /// Whether the run was in a PID namespace: its ledger's pids are the namespace's, not
    /// the host's, and its processes died with it.
    #[serde(default)]
    namespaced: bool,
}

/// The owner of this process's roots, set once by [`contain`].
static OWNER: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();

/// The waiter, in a contained run: its death ends the run like SIGTERM.
static WAITER: std::sync::OnceLock<host_facts::pidfd::PidFd> = std::sync::OnceLock::new();

/// Resolves once the process waiting for this contained run has died (at once if it
/// already has); never in a run that is not contained.
///
/// The death signal alone is not enough: a PID namespace's init drops a SIGTERM it has no
/// handler for yet, so a waiter SIGKILLed in the run's first milliseconds (`timeout -s
/// KILL`, a CI cancellation) went unnoticed, and the run went on to a green report with
/// nobody to read it. The waiter's pidfd stays readable once it is dead, whenever it is
/// looked at.
pub async fn waiter_gone() {
    match WAITER.get() {
        Some(waiter) if waiter.exited().await.is_ok() => {}
        // Without a waiter (not contained), or if its fd cannot be watched, only the
        // signals end the run.
        _ => std::future::pending().await,
    }
}

fn owner() -> Owner {
    OWNER.get().cloned().unwrap_or_else(|| Owner { harness: ProcessId::me(), namespaced: false })
}

/// A run's ledger in one root: marks it as this harness's, and records each process the
/// run starts.
#[derive(Debug)]
pub struct Ledger {
    root: PathBuf,
    started: std::sync::Mutex<Vec<ProcessId>>,
}

impl Ledger {
    /// Marks `root` as this process's and opens its ledger.
    pub fn claim(root: &Path) -> std::io::Result<Self> {
        let owner = serde_json::to_vec(&owner()).unwrap_or_default();
        std::fs::write(root.join(OWNER_FILE), owner)?;
        Ok(Self { root: root.to_owned(), started: Default::default() })
    }

    /// Records process `pid`, just started by the run.
    pub fn started(&self, pid: u32) {
        let id = ProcessId::of(pid);
        self.started.lock().unwrap_or_else(|e| e.into_inner()).push(id);
        let line = serde_json::to_string(&id).unwrap_or_default() + "\n";
        // O_APPEND: lines from concurrent spawns never interleave.
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(self.root.join(LEDGER_FILE)) {
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// Every process the run started, in order.
    pub fn processes(&self) -> Vec<ProcessId> {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGKILLs every process the run started that still runs (with its group); returns
    /// how many there were.
    pub fn kill_all(&self) -> usize {
        self.processes().iter().filter(|p| p.kill()).count()
    }
}

/// A scenario root, removed when dropped: everything in it first and its owner file
/// last, so a removal cut short (no file descriptor left under `ulimit -n`, say) leaves a
/// root the sweep still recognises. A root that cannot be removed now is kept in a list
/// that [`remove_pending_roots`] tries again, once the run's work has let go of its files.
#[derive(Debug)]
pub struct Root(PathBuf);

/// Roots whose removal failed, to try again.
static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

impl Root {
    /// A new private (0700) root in the temporary directory.
    pub fn create() -> std::io::Result<Self> {
        Ok(Self(testkit::private_tempdir(ROOT_PREFIX)?.keep()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if remove_root(&self.0).is_err() {
            PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(self.0.clone());
        }
    }
}

/// Removes `root`, its owner file last; tries three times, 10 ms apart.
fn remove_root(root: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        last = (|| {
            for entry in std::fs::read_dir(root)? {
                let entry = entry?;
                if entry.file_name() == OWNER_FILE {
                    continue;
                }
                let path = entry.path();
                if entry.file_type()?.is_dir() { std::fs::remove_dir_all(&path)? } else { std::fs::remove_file(&path)? }
            }
            match std::fs::remove_file(root.join(OWNER_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            std::fs::remove_dir(root)
        })();
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) => {}
        }
    }
    last
}

/// Tries again to remove the roots whose removal failed; says on stderr which still
/// cannot be removed (the next command's sweep removes them).
pub fn remove_pending_roots() {
    let pending: Vec<PathBuf> = std::mem::take(&mut *PENDING.lock().unwrap_or_else(|e| e.into_inner()));
    for root in pending {
        if let Err(e) = remove_root(&root) {
            eprintln!("warning: cannot remove the scenario root {}: {e}; the next run removes it", root.display());
        }
    }
}

/// What the sweep found of runs that died without cleaning up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Roots removed.
    pub roots: Vec<PathBuf>,
    /// Processes ended.
    pub processes: usize,
    /// Mounts detached.
    pub mounts: usize,
}

/// Cleans up after harness runs that died (their owner is gone): in `dir` (the
/// temporary directory), every root or VM work directory with an owner file whose
/// harness no longer runs has the processes of its ledger ended, its mounts detached and
/// itself removed. Anything else is left alone.
pub fn sweep(dir: &Path) -> Swept {
    sweep_where(dir, |owner| !owner.harness.is_alive() && owner.harness.pid != std::process::id())
}

/// [`sweep`] of the roots whose owner `chosen` picks.
fn sweep_where(dir: &Path, chosen: impl Fn(&Owner) -> bool) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else { return swept };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(ROOT_PREFIX) || name.starts_with(VM_PREFIX)) {
            continue;
        }
        let root = entry.path();
        // Not followed: a link there is not a root this harness made.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Some(owner) = read_owner(&root) else { continue };
        if !chosen(&owner) {
            continue;
        }
        // A namespaced run's processes died with its namespace, and its pids mean nothing here.
        if !owner.namespaced {
            for process in read_ledger(&root) {
                if process.kill() {
                    swept.processes += 1;
                }
            }
        }
        daemon_core::mount::abort_fuse_connections_under(&root);
        for mount in host_facts::mountinfo::under(&root).into_iter().rev() {
            if daemon_core::mount::umount_lazy(&mount.mount_point).is_ok() {
                swept.mounts += 1;
            }
        }
        // A mount of a dying namespace may take a moment to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            match std::fs::remove_dir_all(&root) {
                Ok(()) => {
                    swept.roots.push(root);
                    break;
                }
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(_) => break,
            }
        }
    }
    swept
}

/// The owner file of `root`, when it is a regular file holding one (bounded read).
fn read_owner(root: &Path) -> Option<Owner> {
    let text = mock_nydusd::script::read_bounded(&root.join(OWNER_FILE), 4096).ok()?;
    serde_json::from_str(&text).ok()
}

/// The processes in `root`'s ledger (bounded read; bad lines skipped).
fn read_ledger(root: &Path) -> Vec<ProcessId> {
    let text = mock_nydusd::script::read_bounded(&root.join(LEDGER_FILE), 16 * 1024 * 1024).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Sweeps the temporary directory and says on stderr what a killed run had left.
pub fn sweep_and_report() {
    let swept = sweep(&std::env::temp_dir());
    if !swept.roots.is_empty() {
        eprintln!(
            "note: removed what {} killed harness run(s) left: {} processes ended, {} mounts detached, roots {}",
            swept.roots.len(),
            swept.processes,
            swept.mounts,
            swept.roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
}

/// How the command is contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contained {
    /// In a PID and mount namespace of its own.
    Namespaces,
    /// Not: why not (the ledger and the sweep still hold).
    NotInNamespaces(String),
}

/// Moves the rest of the command into a PID and mount namespace of its own, when it can
/// (see the module docs). Must be called before any thread is started. In the original
/// process it never returns: that process waits for the command, passes SIGINT, SIGTERM
/// and SIGHUP on, and exits as the command did.
pub fn contain() -> Contained {
    if std::env::var_os("HARNESS_NO_NAMESPACE").is_some_and(|v| !v.is_empty() && v != "0") {
        return Contained::NotInNamespaces("HARNESS_NO_NAMESPACE is set".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Contained::NotInNamespaces("not root".into());
    }
    use nix::sched::{CloneFlags, unshare};
    // The waiter's own pidfd, inherited: the child learns of its death even if it happens
    // before the death signal is armed.
    let Ok(waiter) = host_facts::pidfd::PidFd::open(std::process::id()) else {
        return Contained::NotInNamespaces("pidfd_open failed".into());
    };
    let me = ProcessId::me();
    // Only the PID namespace here (it applies to the children): the waiter stays in the
    // host's mount namespace, so that it can remove the run's roots once the run's own
    // mount namespace, made by the child, is gone with it.
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return Contained::NotInNamespaces(format!("unshare: {e}"));
    }
    // SAFETY: single-threaded here (the caller's contract), so the child may run
    // anything; the parent only waits.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("error: cannot fork into a PID namespace: {e}");
            std::process::exit(4);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let code = wait_for(child);
            // The command's namespace is gone with it; what it left on disk goes now.
            let tmp = std::env::temp_dir();
            let _ = sweep_where(&tmp, |owner| owner.harness == me);
            std::process::exit(code)
        }
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = OWNER.set(Owner { harness: me, namespaced: true });
            if let Err(why) = become_init(&waiter) {
                eprintln!("error: cannot set up the run's namespace: {why}");
                std::process::exit(4);
            }
            let _ = WAITER.set(waiter);
            Contained::Namespaces
        }
    }
}

/// In the child: stops (cleaning up, as for SIGTERM) when the waiter dies, keeps its
/// mounts to itself, and sees its own processes in `/proc`.
fn become_init(waiter: &host_facts::pidfd::PidFd) -> Result<(), SetupFailed> {
    use nix::mount::{MsFlags, mount};
    let failed = |what: &'static str| move |source| SetupFailed { what, source };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(failed("PR_SET_PDEATHSIG"))?;
    // A process group of its own: a kill of the waiter's group (`timeout -s KILL`, a CI
    // job's cancellation) reaches the waiter only, and this process cleans up after it
    // instead of dying beside it with nobody left to.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(failed("a mount namespace"))?;
    if waiter.has_exited() {
        std::process::exit(143);
    }
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(failed("making / private"))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(failed("mounting /proc"))?;
    Ok(())
}

/// A part of the namespace's set-up that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
struct SetupFailed {
    what: &'static str,
    source: nix::Error,
}

/// How long the waiter gives the command to stop after passing a signal on, before it
/// kills the namespace outright (its init may not have its handlers yet).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// In the waiter: passes signals on until `child` exits; its exit code.
fn wait_for(child: nix::unistd::Pid) -> i32 {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGCHLD] {
        set.add(signal);
    }
    let _ = set.thread_block();
    // The signal passed on, and when the child is killed if it has not stopped by then.
    let mut passed: Option<(Signal, std::time::Instant)> = None;
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
            Err(nix::errno::Errno::ECHILD) => return 1,
            _ => {}
        }
        if let Some((signal, kill_at)) = passed {
            if std::time::Instant::now() >= kill_at {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            } else {
                // Again: a namespace's init drops a signal it has no handler for yet (a
                // Ctrl-C right at the start), and once it has one, more do no harm.
                let _ = nix::sys::signal::kill(child, signal);
            }
        }
        // Wakes for a signal, or every 100 ms to check the clock.
        let timeout = nix::sys::time::TimeSpec::from_duration(std::time::Duration::from_millis(100));
        if let Ok(signal) = sigtimedwait(&set, &timeout)
            && signal != Signal::SIGCHLD
        {
            let _ = nix::sys::signal::kill(child, signal);
            let kill_at = passed.map_or_else(|| std::time::Instant::now() + STOP_GRACE, |(_, at)| at);
            passed = Some((signal, kill_at));
        }
    }
}

/// `sigtimedwait(2)`, which nix does not wrap.
fn sigtimedwait(
    set: &nix::sys::signal::SigSet,
    timeout: &nix::sys::time::TimeSpec,
) -> nix::Result<nix::sys::signal::Signal> {
    // SAFETY: the set and timespec are valid for the call; no siginfo is asked for.
    let n = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), timeout.as_ref()) };
    nix::errno::Errno::result(n).and_then(nix::sys::signal::Signal::try_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn the_sweep_removes_only_roots_whose_owner_is_dead() {
        let tmp = tempfile::tempdir().unwrap();
        // A dead owner: a process that has exited.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = ProcessId::of(gone.id());
        gone.wait().unwrap();
        let dead = ProcessId { start_time: dead.start_time.or(Some(1)), ..dead };
        let orphan = tmp.path().join(format!("{ROOT_PREFIX}dead"));
        std::fs::create_dir(&orphan).unwrap();
        let owner = Owner { harness: dead, namespaced: false };
        std::fs::write(orphan.join(OWNER_FILE), serde_json::to_vec(&owner).unwrap()).unwrap();
        // Its ledger names a live process it started.
        let mut left = std::process::Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        let line = serde_json::to_string(&ProcessId::of(left.id())).unwrap();
        std::fs::write(orphan.join(LEDGER_FILE), line + "\n").unwrap();
        // A live owner's root, and a directory without an owner: untouched.
        let live = tmp.path().join(format!("{ROOT_PREFIX}live"));
        std::fs::create_dir(&live).unwrap();
        let me = Owner { harness: ProcessId::of(std::process::id()), namespaced: false };
        std::fs::write(live.join(OWNER_FILE), serde_json::to_vec(&me).unwrap()).unwrap();
        let foreign = tmp.path().join(format!("{ROOT_PREFIX}foreign"));
        std::fs::create_dir(&foreign).unwrap();
        let swept = sweep(tmp.path());
        assert_eq!(swept.roots, vec![orphan.clone()]);
        assert_eq!(swept.processes, 1);
        assert!(!orphan.exists() && live.exists() && foreign.exists());
        let status = left.wait().unwrap();
        assert!(!status.success(), "the ledger's process was ended");
    }

    #[test]
    fn a_process_is_killed_only_while_it_is_the_one_recorded() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let recorded = ProcessId::of(child.id());
        let impostor = ProcessId { start_time: recorded.start_time.map(|t| t + 1), ..recorded };
        assert!(!impostor.kill(), "another start time: not ours");
        assert!(recorded.is_alive());
        assert!(recorded.kill());
        child.wait().unwrap();
        assert!(!recorded.is_alive());
    }
}
