//! Waiting on a daemon, each wait with its deadline: for its API socket, for a state,
//! and for its process to end (the child with its exit status, or any verified process).

use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use super::{Daemon, DaemonError, FsDriver, error_chain};
use crate::api::{DaemonState, NydusdClient};
use crate::wait::Backoff;

impl Daemon {
    /// Asks nydusd for its state and caches it with the build info; UNKNOWN on failure.
    pub async fn get_state(&self) -> Result<DaemonState, DaemonError> {
        let client = self.client().await?;
        match client.get_daemon_info().await {
            Ok(info) => {
                let mut observed = self.lock_observed();
                observed.state = Some(info.state);
                observed.version = Some(info.version);
                Ok(info.state)
            }
            Err(source) => Err(DaemonError::Client { id: self.id(), source: Box::new(source) }),
        }
    }

    /// Waits until nydusd reports `expected`, for at most [`Timeouts::state`](crate::wait::Timeouts::state) plus the socket wait.
    pub async fn wait_until_state(&self, expected: DaemonState) -> Result<(), DaemonError> {
        self.wait_until_state_within(expected, self.timeouts.state).await
    }

    /// [`Daemon::wait_until_state`] with an explicit deadline.
    pub async fn wait_until_state_within(&self, expected: DaemonState, within: Duration) -> Result<(), DaemonError> {
        if self.last_observed_state() == expected {
            return Ok(());
        }
        let mut backoff = Backoff::new(&self.timeouts, within);
        let mut last_error: Option<String>;
        let mut quoted = false;
        loop {
            match self.get_state().await {
                Ok(state) if state == expected => return Ok(()),
                Ok(_) => last_error = None,
                Err(err) => {
                    quoted = matches!(err, DaemonError::SocketTimeout { last_words: Some(_), .. });
                    last_error = Some(error_chain(&err));
                }
            }
            // A process that is gone will not reach any state: say so now, not at the deadline.
            let gone = last_error.is_some() && self.pid() > 0 && !self.is_alive();
            if gone || !backoff.wait().await {
                if gone {
                    let words = match self.last_words() {
                        Some(w) if !quoted => format!("; it printed: {w}"),
                        _ => String::new(),
                    };
                    last_error = last_error.map(|e| format!("{e}; the process has exited{words}"));
                }
                return Err(DaemonError::StateTimeout {
                    id: self.id(),
                    expected,
                    last_observed: self.last_observed_state(),
                    after: within,
                    last_error,
                });
            }
        }
    }

    /// The API client, waiting for the socket to accept connections first if none exists yet.
    ///
    /// Unlike upstream, which only checks that a socket *file* exists, this connects: a
    /// stale socket left by a killed daemon does not count as ready. The wait ends early if
    /// the process exits or is a zombie.
    pub async fn client(&self) -> Result<NydusdClient, DaemonError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let socket = self.api_socket();
        self.wait_for_socket(&socket).await?;
        let client = NydusdClient::new(socket)
            .with_timeout(self.timeouts.request)
            .with_reply_limit(self.reply_limit())
            .with_observer(self.exchange_observer());
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn wait_for_socket(&self, socket: &Path) -> Result<(), DaemonError> {
        let mut backoff = Backoff::new(&self.timeouts, self.timeouts.socket);
        loop {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            let exited = match self.current_process() {
                Some(p) if p.has_exited() => {
                    Some(p.wait().await.map(|s| s.to_string()).unwrap_or_else(|| "exited".into()))
                }
                Some(_) => None,
                // A daemon recovered from the store: watch the recorded process itself.
                None if self.pid() > 0 => match self.recorded_process() {
                    Ok(Some(pidfd)) if !pidfd.has_exited() => None,
                    Ok(_) => Some("exited".into()),
                    Err(e) => Some(e.to_string()),
                },
                None => None,
            };
            if exited.is_some() || !backoff.wait().await {
                let last_words = if exited.is_some() { self.last_words() } else { None };
                return Err(DaemonError::SocketTimeout {
                    id: self.id(),
                    socket: socket.to_owned(),
                    after: self.timeouts.socket,
                    exited,
                    last_words,
                });
            }
        }
    }

    /// Drops the cached client, so the next call waits for the socket again.
    pub async fn reset_client(&self) {
        *self.client.lock().await = None;
    }

    /// Waits for the process this object started to exit and reaps it; `None` when there
    /// is no such process.
    pub async fn wait_child(&self) -> Option<ExitStatus> {
        let process = self.current_process()?;
        process.wait().await
    }

    /// Go `Wait`: waits for the daemon's process to end (reaping it when it is our child,
    /// otherwise watching its pidfd), then, for fusedev, until the host mountpoint is
    /// unmounted, within [`Timeouts::exit`](crate::wait::Timeouts::exit). Unlike upstream, no lock is held meanwhile,
    /// so state queries on the daemon are not blocked.
    pub async fn wait_for_exit_and_unmount(&self) -> Result<(), DaemonError> {
        self.wait_for_process_exit().await?;
        let states = self.record();
        if states.fs_driver == FsDriver::Fusedev && !states.mountpoint.as_os_str().is_empty() {
            crate::mount::wait_until_unmounted(&states.mountpoint, &self.timeouts, self.timeouts.exit)
                .await
                .map_err(|source| DaemonError::Mount { id: states.id.clone(), source })?;
        }
        Ok(())
    }

    /// Waits for the daemon's process to end, for at most [`Timeouts::exit`](crate::wait::Timeouts::exit), without
    /// waiting for its mount to go: after a crash the FUSE mount stays (failover keeps it on
    /// purpose; restart detaches it). Upstream waits for its own child without a deadline,
    /// so a stopped or hung daemon blocks destroy, restart and failover for ever.
    pub async fn wait_for_process_exit(&self) -> Result<(), DaemonError> {
        self.wait_for_process_exit_after("its death was reported").await
    }

    pub(super) async fn wait_for_process_exit_after(&self, signal: &str) -> Result<(), DaemonError> {
        let after = self.timeouts.exit;
        let timed_out = |pid: u32| DaemonError::ExitTimeout { id: self.id(), pid, after, signal: signal.to_owned() };
        if let Some(process) = self.current_process() {
            if tokio::time::timeout(after, process.wait()).await.is_err() {
                return Err(timed_out(process.pid()));
            }
        } else if let Ok(Some(pidfd)) = self.recorded_process()
            && tokio::time::timeout(after, pidfd.exited()).await.is_err()
        {
            return Err(timed_out(pidfd.pid()));
        }
        Ok(())
    }
}
