//! nydusd's command line, built from a daemon's state as a pure function.
//!
//! The Go builder is reflection-driven, so flags come out in struct-field order whatever
//! order the options were applied in (`snapshotter-lifecycle.md` §3). [`NydusdCommand`]
//! declares its fields in that order and [`NydusdCommand::args`] walks them in order.

use std::ffi::OsString;
use std::path::PathBuf;

use super::record::{DaemonMode, DaemonRecord, FsDriver};

/// nydusd's subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    /// FUSE daemon.
    Fuse,
    /// fscache blob-cache host.
    Singleton,
}

/// A nydusd command line; `None`/`false`/`0` fields are left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NydusdCommand {
    /// `fuse` or `singleton`, always first.
    pub subcommand: Subcommand,
    /// `--fscache <dir>`.
    pub fscache: Option<PathBuf>,
    /// `--fscache-threads <n>`.
    pub fscache_threads: u32,
    /// `--upgrade`.
    pub upgrade: bool,
    /// `--thread-num <n>`.
    pub thread_num: u32,
    /// `--id <id>`.
    pub id: Option<String>,
    /// `--config <file>`.
    pub config: Option<PathBuf>,
    /// `--bootstrap <file>`.
    pub bootstrap: Option<PathBuf>,
    /// `--mountpoint <dir>`.
    pub mountpoint: Option<PathBuf>,
    /// `--apisock <path>`.
    pub apisock: PathBuf,
    /// `--log-level <level>`.
    pub log_level: String,
    /// `--log-rotation-size <MB>`.
    pub log_rotation_size: u32,
    /// `--supervisor <path>`.
    pub supervisor: Option<PathBuf>,
    /// `--log-file <path>`.
    pub log_file: Option<PathBuf>,
    /// `--prefetch-files <list>`.
    pub prefetch_files: Option<String>,
    /// `--backend-source <url>` (not a nydusd flag; kept for fidelity with the Go builder).
    pub backend_source: Option<String>,
    /// `--failover-policy <policy>`.
    pub failover_policy: Option<String>,
}

/// Inputs that are not part of the persisted state.
#[derive(Debug, Clone, Default)]
pub struct CommandInputs {
    /// Start in INIT and wait for a takeover (hot upgrade).
    pub upgrade: bool,
    /// The dedicated instance's bootstrap.
    pub bootstrap: Option<PathBuf>,
    /// fscache cache directory (`--fscache`).
    pub fscache_dir: Option<PathBuf>,
}

/// Why a command line could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A dedicated fusedev daemon needs the bootstrap of its one instance.
    #[error("dedicated daemon {id} has no bootstrap to pass to nydusd")]
    MissingBootstrap {
        /// Daemon id.
        id: String,
    },
    /// An fscache daemon needs its cache directory.
    #[error("fscache daemon {id} has no cache directory")]
    MissingCacheDir {
        /// Daemon id.
        id: String,
    },
}

impl NydusdCommand {
    /// Builds the command line for `state` (Go `BuildDaemonCommand`).
    pub fn build(state: &DaemonRecord, inputs: &CommandInputs) -> Result<Self, CommandError> {
        let has_supervisor = !state.supervisor_path.as_os_str().is_empty();
        let mut cmd = NydusdCommand {
            subcommand: Subcommand::Fuse,
            fscache: None,
            fscache_threads: 0,
            upgrade: inputs.upgrade,
            thread_num: 0,
            id: has_supervisor.then(|| state.id.clone()),
            config: None,
            bootstrap: None,
            mountpoint: None,
            apisock: state.api_socket.clone(),
            log_level: if state.log_level.is_empty() { "info".to_owned() } else { state.log_level.clone() },
            log_rotation_size: state.log_rotation_size,
            supervisor: has_supervisor.then(|| state.supervisor_path.clone()),
            log_file: (!state.log_to_stdout).then(|| state.log_file()),
            prefetch_files: None,
            backend_source: None,
            failover_policy: None,
        };
        match state.fs_driver {
            FsDriver::Fscache => {
                cmd.subcommand = Subcommand::Singleton;
                cmd.fscache = Some(
                    inputs.fscache_dir.clone().ok_or_else(|| CommandError::MissingCacheDir { id: state.id.clone() })?,
                );
                cmd.fscache_threads = state.thread_num;
                // `singleton` rejects --failover-policy (upstream #681), and has no mountpoint.
            }
            FsDriver::Fusedev => {
                cmd.mountpoint = Some(state.mountpoint.clone());
                cmd.thread_num = state.thread_num;
                if state.daemon_mode == DaemonMode::Dedicated {
                    cmd.config = Some(state.config_file(None));
                    cmd.bootstrap = Some(
                        inputs
                            .bootstrap
                            .clone()
                            .ok_or_else(|| CommandError::MissingBootstrap { id: state.id.clone() })?,
                    );
                }
                cmd.failover_policy = state.failover_policy.map(|p| p.as_str().to_owned());
            }
        }
        Ok(cmd)
    }

    /// The argv after the program name, in the Go builder's order.
    pub fn args(&self) -> Vec<OsString> {
        let subcommand = match self.subcommand {
            Subcommand::Fuse => "fuse",
            Subcommand::Singleton => "singleton",
        };
        let mut out: Vec<OsString> = vec![subcommand.into()];
        let nonzero = |n: u32| (n != 0).then(|| OsString::from(n.to_string()));
        let path = |p: &Option<PathBuf>| p.clone().map(OsString::from);
        let text = |t: &Option<String>| t.clone().map(OsString::from);
        push(&mut out, "fscache", path(&self.fscache));
        push(&mut out, "fscache-threads", nonzero(self.fscache_threads));
        if self.upgrade {
            out.push("--upgrade".into());
        }
        push(&mut out, "thread-num", nonzero(self.thread_num));
        push(&mut out, "id", text(&self.id));
        push(&mut out, "config", path(&self.config));
        push(&mut out, "bootstrap", path(&self.bootstrap));
        push(&mut out, "mountpoint", path(&self.mountpoint));
        push(&mut out, "apisock", Some(self.apisock.clone().into()));
        push(&mut out, "log-level", Some(self.log_level.clone().into()));
        push(&mut out, "log-rotation-size", nonzero(self.log_rotation_size));
        push(&mut out, "supervisor", path(&self.supervisor));
        push(&mut out, "log-file", path(&self.log_file));
        push(&mut out, "prefetch-files", text(&self.prefetch_files));
        push(&mut out, "backend-source", text(&self.backend_source));
        push(&mut out, "failover-policy", text(&self.failover_policy));
        out
    }
}

fn push(out: &mut Vec<OsString>, name: &str, value: Option<OsString>) {
    if let Some(v) = value {
        out.push(format!("--{name}").into());
        out.push(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nydusd_api::PendingRequestPolicy;

    fn render(cmd: &NydusdCommand) -> String {
        cmd.args().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    }

    fn state(mode: DaemonMode, driver: FsDriver) -> DaemonRecord {
        DaemonRecord {
            id: "d1".into(),
            api_socket: "/r/socket/d1/api.sock".into(),
            daemon_mode: mode,
            fs_driver: driver,
            log_dir: "/r/logs/d1".into(),
            log_level: "info".into(),
            mountpoint: "/r/mnt".into(),
            thread_num: 4,
            config_dir: "/r/config/d1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn shared_fusedev_with_supervisor_and_upgrade() {
        let mut s = state(DaemonMode::Shared, FsDriver::Fusedev);
        s.supervisor_path = "/r/supervisor/d1.sock".into();
        s.failover_policy = Some(PendingRequestPolicy::Resend);
        let cmd = NydusdCommand::build(&s, &CommandInputs { upgrade: true, ..Default::default() }).unwrap();
        insta::assert_snapshot!(render(&cmd), @"fuse --upgrade --thread-num 4 --id d1 --mountpoint /r/mnt --apisock /r/socket/d1/api.sock --log-level info --supervisor /r/supervisor/d1.sock --log-file /r/logs/d1/nydusd.log --failover-policy resend");
    }

    #[test]
    fn dedicated_fusedev_passes_config_and_bootstrap() {
        let mut s = state(DaemonMode::Dedicated, FsDriver::Fusedev);
        s.mountpoint = "/r/snapshots/1/mnt".into();
        s.log_to_stdout = true;
        let inputs =
            CommandInputs { bootstrap: Some("/r/snapshots/1/fs/image/image.boot".into()), ..Default::default() };
        let cmd = NydusdCommand::build(&s, &inputs).unwrap();
        insta::assert_snapshot!(render(&cmd), @"fuse --thread-num 4 --config /r/config/d1/config.json --bootstrap /r/snapshots/1/fs/image/image.boot --mountpoint /r/snapshots/1/mnt --apisock /r/socket/d1/api.sock --log-level info");
    }

    #[test]
    fn fscache_uses_singleton_and_never_a_failover_policy() {
        let mut s = state(DaemonMode::Shared, FsDriver::Fscache);
        s.failover_policy = Some(PendingRequestPolicy::Flush);
        let inputs = CommandInputs { fscache_dir: Some("/r/cache".into()), upgrade: true, ..Default::default() };
        let cmd = NydusdCommand::build(&s, &inputs).unwrap();
        insta::assert_snapshot!(render(&cmd), @"singleton --fscache /r/cache --fscache-threads 4 --upgrade --apisock /r/socket/d1/api.sock --log-level info --log-file /r/logs/d1/nydusd.log");
    }

    #[test]
    fn dedicated_without_bootstrap_is_an_error() {
        let s = state(DaemonMode::Dedicated, FsDriver::Fusedev);
        assert_eq!(
            NydusdCommand::build(&s, &CommandInputs::default()).unwrap_err(),
            CommandError::MissingBootstrap { id: "d1".into() }
        );
    }
}
