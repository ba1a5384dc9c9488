//! The signals that end a command early: SIGINT (a terminal's Ctrl-C), SIGTERM (CI
//! cancellation, `timeout`, Kubernetes) and SIGHUP (a closed terminal or SSH session).
//! Every command that starts daemons (`run`, `chaos`, `bench`, `diff`) stops the same way
//! on each of them: the work in progress is dropped, which kills its daemons, unmounts
//! and removes its temporary roots (see `runner::Run`'s `Drop`), and the command exits
//! with 128 + the signal number, as a shell reports a process killed by it.

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Listeners for the three signals. Once installed, none of them kills the process by
/// default any more, so one must be installed before any daemon is started.
#[derive(Debug)]
pub struct Termination {
    interrupt: Signal,
    terminate: Signal,
    hang_up: Signal,
}

impl Termination {
    /// Installs the listeners; must run inside a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hang_up: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next of the signals; returns its number. The death of the process
    /// that waits for a contained run counts as SIGTERM (see
    /// [`crate::containment::waiter_gone`]).
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => nix::sys::signal::Signal::SIGINT as i32,
            _ = self.terminate.recv() => nix::sys::signal::Signal::SIGTERM as i32,
            _ = self.hang_up.recv() => nix::sys::signal::Signal::SIGHUP as i32,
            () = crate::containment::waiter_gone() => nix::sys::signal::Signal::SIGTERM as i32,
        }
    }
}

/// Runs `work` to its end, or until one of the signals arrives: then `work` is dropped
/// (cleaning up what it started) and the signal's number is returned.
pub async fn unless_signalled<F: Future>(work: F) -> Result<F::Output, i32> {
    let Ok(mut termination) = Termination::install() else {
        // Without listeners the default dispositions stay, and nothing could clean up;
        // running the work anyway is no worse than before, still ended with its waiter.
        return tokio::select! {
            output = work => Ok(output),
            () = crate::containment::waiter_gone() => Err(nix::sys::signal::Signal::SIGTERM as i32),
        };
    };
    tokio::select! {
        output = work => Ok(output),
        number = termination.next() => Err(number),
    }
}

/// The exit code after `signal`: 128 + its number.
pub fn exit_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(u8::MAX)
}

/// The signal's name, for the message printed before exiting.
pub fn name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str().to_owned()).unwrap_or_else(|_| signal.to_string())
}
