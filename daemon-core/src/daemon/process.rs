//! A nydusd child process: spawn, signal, reap.
//!
//! A pid is only signalled while this process still holds it un-reaped: until `wait`
//! collects the exit status, the kernel cannot hand the pid to anyone else, so a signal
//! can never reach a recycled pid (upstream's `Terminate` has no such guard, PR #789).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::Signal;
use tokio::sync::watch;

use host_facts::pidfd::PidFd;

/// What to run and where its output goes.
#[derive(Debug, Clone, Default)]
pub struct SpawnSpec {
    /// The nydusd (or mock-nydusd) binary.
    pub binary: PathBuf,
    /// Arguments after the program name.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// File that receives stdout and stderr; inherited when `None`.
    pub output: Option<PathBuf>,
    /// SIGKILL the process when its handle is dropped (tests and scenarios). Off for a
    /// manager, whose daemons must outlive it so that it can recover them.
    pub kill_on_drop: bool,
}

/// Why a process could not be started or signalled.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// `fork`/`exec` failed.
    #[error("cannot start {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output file could not be opened.
    #[error("cannot open output file {path}")]
    Output {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `pidfd_open(2)` failed for a freshly spawned child.
    #[error("cannot open a pidfd for pid {pid}")]
    PidFd {
        /// The child's pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// `pidfd_send_signal(2)` failed.
    #[error("cannot send {signal} to pid {pid}")]
    Signal {
        /// Target pid.
        pid: u32,
        /// The signal.
        signal: Signal,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
}

/// A spawned nydusd. A background task reaps it, so no zombie is left behind whether or
/// not anyone waits; signals go through a pidfd opened while the child was un-reaped.
#[derive(Debug)]
pub struct NydusdProcess {
    pid: u32,
    pidfd: PidFd,
    status: watch::Receiver<Option<ExitStatus>>,
    kill_on_drop: bool,
}

impl NydusdProcess {
    /// Starts `spec` in a new process group of its own. Must run inside a tokio runtime.
    pub fn spawn(spec: &SpawnSpec) -> Result<Self, ProcessError> {
        let mut command = tokio::process::Command::new(&spec.binary);
        command.args(&spec.args).envs(spec.env.iter().cloned()).stdin(Stdio::null());
        // Own process group: a terminal's Ctrl-C does not reach the daemons, and the harness
        // can kill a daemon with everything it forked in one signal.
        command.process_group(0);
        if let Some(path) = &spec.output {
            let open = || {
                // 0600: a daemon's output may quote its configuration, registry auth included.
                std::os::unix::fs::OpenOptionsExt::mode(&mut std::fs::OpenOptions::new(), 0o600)
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| ProcessError::Output { path: path.clone(), source })
            };
            command.stdout(open()?).stderr(open()?);
        }
        let mut child =
            command.spawn().map_err(|source| ProcessError::Spawn { binary: spec.binary.clone(), source })?;
        let pid = child.id().expect("a freshly spawned child has a pid");
        // The child cannot have been reaped yet (only the task below reaps it), so this pidfd
        // names exactly our child.
        let pidfd = PidFd::open(pid).map_err(|source| ProcessError::PidFd { pid, source })?;
        let (tx, status) = watch::channel(None);
        tokio::spawn(async move {
            if let Ok(exit) = child.wait().await {
                let _ = tx.send(Some(exit));
            }
        });
        Ok(Self { pid, pidfd, status, kill_on_drop: spec.kill_on_drop })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has exited and been reaped.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.status.borrow()
    }

    /// Whether the process has exited (zombie or reaped).
    pub fn has_exited(&self) -> bool {
        self.try_status().is_some() || self.pidfd.has_exited()
    }

    /// Sends `signal`; a process that is already gone is not an error.
    pub fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        self.pidfd.send_signal(signal).map(drop).map_err(|source| ProcessError::Signal {
            pid: self.pid,
            signal,
            source,
        })
    }

    /// Waits for the process to exit and be reaped.
    pub async fn wait(&self) -> Option<ExitStatus> {
        let mut status = self.status.clone();
        status.wait_for(Option::is_some).await.ok().and_then(|s| *s)
    }
}

impl Drop for NydusdProcess {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.pidfd.send_signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn sleeper() -> SpawnSpec {
        SpawnSpec { binary: "sleep".into(), args: vec!["30".into()], kill_on_drop: true, ..Default::default() }
    }

    #[tokio::test]
    async fn signal_then_wait_reports_the_signal() {
        let p = NydusdProcess::spawn(&sleeper()).unwrap();
        assert!(!p.has_exited());
        p.signal(Signal::SIGTERM).unwrap();
        let status = p.wait().await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
        assert!(p.has_exited());
        // Reaped: signalling again is harmless and reaches no other process.
        p.signal(Signal::SIGKILL).unwrap();
    }

    #[tokio::test]
    async fn drop_kills_when_asked_to() {
        let p = NydusdProcess::spawn(&sleeper()).unwrap();
        let pidfd = PidFd::open(p.pid()).unwrap();
        drop(p);
        tokio::time::timeout(std::time::Duration::from_secs(5), pidfd.exited()).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn spawning_a_missing_binary_names_it() {
        let spec = SpawnSpec { binary: "/nonexistent/nydusd".into(), ..Default::default() };
        let err = NydusdProcess::spawn(&spec).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/nydusd"), "{err}");
    }
}
