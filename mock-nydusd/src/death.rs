//! Ending the process on purpose: nydusd's aborts and scripted deaths. Core dumps are
//! switched off first so that deliberate crashes leave no files behind on the host.

use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, raise};

/// Dies by `signal` (or, for catchable signals, delivers it and returns).
pub fn raise_signal(signal: Signal) {
    if matches!(signal, Signal::SIGABRT | Signal::SIGSEGV) {
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    }
    if signal == Signal::SIGABRT {
        std::process::abort();
    }
    if signal == Signal::SIGSEGV {
        // A handler may be installed by the runtime; the default action is what a crash does.
        // SAFETY: resetting a disposition to SIG_DFL has no memory-safety requirements.
        let _ = unsafe { nix::sys::signal::signal(Signal::SIGSEGV, nix::sys::signal::SigHandler::SigDfl) };
    }
    let _ = raise(signal);
}

/// Aborts like a release build of nydusd on a panic.
pub fn abort() -> ! {
    raise_signal(Signal::SIGABRT);
    unreachable!("abort does not return")
}
