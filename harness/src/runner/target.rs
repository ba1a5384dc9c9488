//! What differs between running a scenario's daemons as the mock and as a real nydusd,
//! in one place: the runner and the steps ask the target, never which one it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use daemon_core::Layout;
use daemon_core::manager::PerDaemonArgs;
use serde_json::Value;

use super::Run;

/// A kind of daemon the harness can drive.
pub(crate) trait Target: Sync {
    /// The binary each daemon runs, given the one configured for the run.
    fn daemon_binary(&self, root: &Layout, configured: &Path) -> std::io::Result<PathBuf>;

    /// What every daemon's command line gets beyond the manager's, and what each daemon
    /// (by id) gets.
    fn daemon_args(&self, run: &Run<'_>) -> (Vec<OsString>, PerDaemonArgs);

    /// Where the daemons' side of the exchanges is journaled.
    fn daemon_journal(&self, root: &Layout) -> PathBuf;

    /// The daemons' journal entries, of `id`'s processes only when given.
    fn daemon_entries(&self, run: &Run<'_>, id: Option<&str>) -> Vec<Value>;

    /// Whether instance trees become RAFS images (nydus-image) rather than the mock's
    /// JSON stand-in for a bootstrap.
    fn builds_images(&self) -> bool;

    /// The program to start as the reader workload: the harness binary under a name that
    /// is not the mock's.
    fn reader_program(&self, configured: &Path) -> std::io::Result<PathBuf>;

    /// The process a `signal` step's SIGKILL goes to, for the daemon process `pid`: the
    /// process itself, or the real nydusd behind the injector, whose death the injector
    /// then mirrors, so that the death the manager sees comes after nydusd's (a SIGKILL to
    /// the injector reaches nydusd only a moment later, by PR_SET_PDEATHSIG).
    fn sigkill_target(&self, pid: u32) -> u32;

    /// Writes at `path` the next build an `upgrade` step moves a daemon to, reporting
    /// `git_commit` where the target can be made to; `daemon_binary` is what
    /// [`Target::daemon_binary`] gave.
    fn write_next_build(&self, path: &Path, daemon_binary: &Path, git_commit: &str) -> std::io::Result<()>;
}

/// mock-nydusd, which is the harness binary started as `nydusd`.
pub(crate) struct Mock;

/// A real nydusd binary.
pub(crate) struct Real;

impl Target for Mock {
    fn daemon_binary(&self, root: &Layout, configured: &Path) -> std::io::Result<PathBuf> {
        testkit::link_mock(root.root(), configured)
    }

    fn daemon_args(&self, run: &Run<'_>) -> (Vec<OsString>, PerDaemonArgs) {
        run.mock_args()
    }

    fn daemon_journal(&self, root: &Layout) -> PathBuf {
        root.log_dir().join("mock.jsonl")
    }

    /// Each mock journals its requests; a daemon's processes are those whose command line
    /// names a socket in its directory.
    fn daemon_entries(&self, run: &Run<'_>, id: Option<&str>) -> Vec<Value> {
        let all = super::timeline::merge(&[&run.mock_journal()]);
        let Some(id) = id else { return all };
        let socket_dir = run.root.layout.socket_dir().join(id).to_string_lossy().into_owned();
        let pids: Vec<Value> = all
            .iter()
            .filter(|e| e["event"] == "start")
            .filter(|e| {
                e["argv"].as_array().is_some_and(|argv| {
                    argv.iter().any(|a| a.as_str().is_some_and(|a| a.starts_with(&format!("{socket_dir}/"))))
                })
            })
            .map(|e| e["pid"].clone())
            .collect();
        all.into_iter().filter(|e| pids.contains(&e["pid"])).collect()
    }

    fn builds_images(&self) -> bool {
        false
    }

    /// The configured binary is the harness itself.
    fn reader_program(&self, configured: &Path) -> std::io::Result<PathBuf> {
        Ok(configured.to_owned())
    }

    fn sigkill_target(&self, pid: u32) -> u32 {
        pid
    }

    /// The mock, reporting `git_commit` as its build.
    fn write_next_build(&self, path: &Path, daemon_binary: &Path, git_commit: &str) -> std::io::Result<()> {
        testkit::write_next_build(path, daemon_binary, git_commit)
    }
}

impl Target for Real {
    /// The injector (this binary, started as `nydusd` with the real one named), which
    /// starts the real nydusd behind it ([`crate::record::inject`]); a command line with no
    /// API socket (`--version`, which the manager compares builds by) is the real one's.
    fn daemon_binary(&self, root: &Layout, configured: &Path) -> std::io::Result<PathBuf> {
        let bin = root.root().join("bin");
        std::fs::create_dir_all(&bin)?;
        let injector = bin.join("nydusd");
        // /bin/sh, and no `exec -a`: a VM guest has busybox's sh and no bash. The flag
        // first is what makes the binary the injector whatever its name.
        let script = format!(
            "#!/bin/sh\nexec {} {} {} \"$@\"\n",
            testkit::shell_quote(&std::env::current_exe()?.display().to_string()),
            crate::record::inject::options::NYDUSD_FLAG,
            testkit::shell_quote(&configured.display().to_string())
        );
        testkit::write_script(&injector, &script)?;
        Ok(injector)
    }

    fn daemon_args(&self, run: &Run<'_>) -> (Vec<OsString>, PerDaemonArgs) {
        run.injector_args()
    }

    /// The injector journals each exchange in the mock's format, in the mock's file.
    fn daemon_journal(&self, root: &Layout) -> PathBuf {
        Mock.daemon_journal(root)
    }

    /// As the mock's: the injector's `start` entry names the command line it was given.
    fn daemon_entries(&self, run: &Run<'_>, id: Option<&str>) -> Vec<Value> {
        Mock.daemon_entries(run, id)
    }

    fn builds_images(&self) -> bool {
        true
    }

    /// This process's binary, which must start with [`crate::run_reader_role`] (the
    /// harness binary does; so does every test binary that runs real scenarios).
    fn reader_program(&self, _: &Path) -> std::io::Result<PathBuf> {
        std::env::current_exe()
    }

    fn sigkill_target(&self, pid: u32) -> u32 {
        match host_facts::process::children(pid)[..] {
            [nydusd] => nydusd,
            _ => pid,
        }
    }

    /// The same nydusd behind the injector again: a real nydusd reports its own build, so
    /// the upgrade is to the same release (what a hot upgrade must survive all the same).
    fn write_next_build(&self, path: &Path, daemon_binary: &Path, _: &str) -> std::io::Result<()> {
        let script = format!("#!/bin/sh\nexec {} \"$@\"\n", testkit::shell_quote(&daemon_binary.display().to_string()));
        testkit::write_script(path, &script)
    }
}
