//! Process file descriptors (`pidfd_open(2)`, `pidfd_send_signal(2)`).
//!
//! A pidfd refers to one process for as long as the fd is open: once that process is gone,
//! signalling through it fails with `ESRCH` instead of reaching whoever got the pid next.
//! It also becomes readable when the process exits, which lets us wait for processes that
//! are not our children (daemons adopted after a manager restart).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;
use nix::sys::signal::Signal;

/// An open pidfd.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: u32,
}

impl PidFd {
    /// Opens a pidfd for `pid`. The caller must know `pid` is the intended process at this
    /// moment (e.g. an un-reaped child, or a pid whose start time was checked after opening).
    pub fn open(pid: u32) -> Result<Self, nix::Error> {
        let pid_t = libc::pid_t::try_from(pid).map_err(|_| nix::Error::EINVAL)?;
        // SAFETY: pidfd_open takes a pid and a flags word and returns a new fd or -1; no
        // memory is passed.
        let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid_t, 0 as libc::c_uint) };
        if ret < 0 {
            return Err(nix::Error::last());
        }
        let raw = i32::try_from(ret).map_err(|_| nix::Error::EBADF)?;
        // SAFETY: the kernel just returned this fd to us and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, pid })
    }

    /// The pid this fd was opened for.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal`; `Ok(false)` if the process no longer exists.
    pub fn send_signal(&self, signal: Signal) -> Result<bool, nix::Error> {
        // SAFETY: a valid pidfd, a signal number, a null siginfo (kernel fills a default)
        // and zero flags; no memory is shared with the kernel.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0 as libc::c_uint,
            )
        };
        if ret == 0 {
            return Ok(true);
        }
        match nix::Error::last() {
            nix::Error::ESRCH => Ok(false),
            err => Err(err),
        }
    }

    /// Whether the process has exited (the fd polls readable then). A zombie counts as exited.
    pub fn has_exited(&self) -> bool {
        let mut pfd = [nix::poll::PollFd::new(self.fd.as_fd(), nix::poll::PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Waits until the process has exited, without reaping it.
    pub async fn exited(&self) -> std::io::Result<()> {
        let dup = self.fd.try_clone()?;
        // SAFETY: `dup` is an open fd owned by the AsyncFd for its whole life, and
        // `OwnedFd::as_raw_fd` always returns that same fd.
        let async_fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }?;
        let _guard = async_fd.readable().await?;
        Ok(())
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signal_reaches_the_process_and_then_reports_it_gone() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pidfd = PidFd::open(child.id()).unwrap();
        assert!(!pidfd.has_exited());
        assert!(pidfd.send_signal(Signal::SIGKILL).unwrap());
        pidfd.exited().await.unwrap();
        assert!(pidfd.has_exited());
        child.wait().unwrap();
        // Reaped: the pid may be reused, but the pidfd still names the dead process.
        assert!(!pidfd.send_signal(Signal::SIGKILL).unwrap());
    }
}
