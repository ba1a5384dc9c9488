//! The daemon's process: which one it is (the child this object started, or a recorded
//! pid verified to be the same process), signals to it, and clearing what a dead one
//! leaves behind.

use nix::sys::signal::Signal;

use super::process::ProcessError;
use super::{Daemon, DaemonError, FsDriver};

impl Daemon {
    /// Sends `signal` to the daemon process this object started.
    pub fn signal_child(&self, signal: Signal) -> Result<(), DaemonError> {
        let process = self.current_process().ok_or_else(|| DaemonError::NoProcess { id: self.id() })?;
        process.signal(signal).map_err(|source| DaemonError::Process { id: self.id(), source })
    }

    /// SIGTERM (Go `Terminate`). The process this object started is signalled through its
    /// pidfd; a recorded pid from before a manager restart only after checking that it is
    /// still the same process (its start time, or its command line naming our API socket),
    /// so a recycled pid is never signalled (upstream PR #789). No pid is a no-op.
    pub fn terminate(&self) -> Result<(), DaemonError> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends `signal` to the daemon's process, whether this object started it or it was
    /// recovered from the store (with the identity check of [`Daemon::terminate`]).
    pub fn signal(&self, signal: Signal) -> Result<(), DaemonError> {
        match self.signal_child(signal) {
            Err(DaemonError::NoProcess { .. }) => {}
            other => return other,
        }
        let Some(pidfd) = self.recorded_process()? else { return Ok(()) };
        pidfd.send_signal(signal).map(drop).map_err(|e| DaemonError::Process {
            id: self.id(),
            source: ProcessError::Signal { pid: pidfd.pid(), signal, source: e },
        })
    }

    /// A pidfd for the recorded pid if it still names this daemon's nydusd.
    pub(super) fn recorded_process(&self) -> Result<Option<host_facts::pidfd::PidFd>, DaemonError> {
        let states = self.record();
        if states.process_id == 0 {
            return Ok(None);
        }
        let pid = states.process_id;
        // Opened first: from here on the pidfd names one process even if the pid is reused,
        // so the identity checked below is the identity signalled.
        let pidfd = match host_facts::pidfd::PidFd::open(pid) {
            Ok(fd) => fd,
            Err(nix::Error::ESRCH) => return Ok(None),
            Err(e) => {
                return Err(DaemonError::Process { id: states.id, source: ProcessError::PidFd { pid, source: e } });
            }
        };
        let not_ours = |why: String| DaemonError::NotOurProcess { id: states.id.clone(), pid, why };
        match states.process_start_time {
            Some(recorded) => match host_facts::process::start_time(pid) {
                Some(now) if now == recorded => Ok(Some(pidfd)),
                Some(now) => Err(not_ours(format!("started at tick {now}, ours at {recorded}"))),
                None => Ok(None),
            },
            None => {
                let socket = states.api_socket.to_string_lossy().into_owned();
                match host_facts::process::cmdline(pid) {
                    Some(args) if args.iter().any(|a| a == &socket) => Ok(Some(pidfd)),
                    Some(_) => Err(not_ours(format!("its command line does not name {socket}"))),
                    None => Ok(None),
                }
            }
        }
    }

    /// Whether the daemon's process is alive: the one this object started (not exited,
    /// not a zombie), or the recorded one from before a manager restart.
    pub fn is_alive(&self) -> bool {
        match self.current_process() {
            Some(p) => !p.has_exited(),
            None => matches!(self.recorded_process(), Ok(Some(fd)) if !fd.has_exited()),
        }
    }

    /// Ends the daemon's process and waits until it is gone (reaped when it is our child):
    /// sends `first` (none: its death was already reported, so it is only waited for),
    /// then SIGKILL when it is still there after [`Timeouts::exit`](crate::wait::Timeouts::exit), as a stopped or hung
    /// daemon ignores SIGTERM. An error only when even SIGKILL did not end it within
    /// another [`Timeouts::exit`](crate::wait::Timeouts::exit). No process is a no-op.
    pub async fn stop_process(&self, first: Option<Signal>) -> Result<(), DaemonError> {
        self.stop_process_telling(first, |_, _| {}).await
    }

    /// [`Daemon::stop_process`], telling `told` of each signal before it goes to a live
    /// process, with the reason for it when it is the SIGKILL after the deadline.
    pub async fn stop_process_telling(
        &self,
        first: Option<Signal>,
        mut told: impl FnMut(Signal, Option<String>),
    ) -> Result<(), DaemonError> {
        let first_name = match first {
            Some(signal) => {
                if self.is_alive() {
                    told(signal, None);
                }
                self.signal(signal)?;
                signal.as_str()
            }
            None => "its death was reported",
        };
        match self.wait_for_process_exit_after(first_name).await {
            Err(DaemonError::ExitTimeout { after, .. }) if first != Some(Signal::SIGKILL) => {
                told(Signal::SIGKILL, Some(format!("still running {after:?} after {first_name}")));
                self.signal(Signal::SIGKILL)?;
                self.wait_for_process_exit_after(Signal::SIGKILL.as_str()).await
            }
            other => other,
        }
    }

    /// Removes what a dead daemon leaves behind so that a fresh start is not mistaken for
    /// a crash recovery (nydusd takes "mountpoint still mounted + dead socket" for one):
    /// the host mount (fusedev) or every instance mount (fscache), detached lazily because
    /// a dead FUSE mount may still have open files; the API socket file; the cached client.
    pub async fn clear_vestige(&self) -> Result<(), DaemonError> {
        let states = self.record();
        let mountpoints = match states.fs_driver {
            FsDriver::Fusedev => vec![states.mountpoint.clone()],
            FsDriver::Fscache => self.instances().list_by_seq().into_iter().map(|r| r.mountpoint).collect(),
        };
        for mountpoint in mountpoints.iter().filter(|m| !m.as_os_str().is_empty()) {
            crate::mount::umount_lazy(mountpoint)
                .map_err(|source| DaemonError::Mount { id: states.id.clone(), source })?;
        }
        let socket = self.api_socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DaemonError::Io { id: self.id(), action: "remove socket", path: socket, source });
            }
        }
        self.reset_client().await;
        Ok(())
    }
}
