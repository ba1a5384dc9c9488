//! How nydusd decides, before it serves anything, whether to start serving (RUNNING) or
//! to wait in INIT for a takeover (`nydusd-api.md` §3.4). The decision is a function of
//! what the daemon observes at start-up, kept apart from the observing so that every case
//! is tested without mounts or stale sockets.

use std::path::Path;

use crate::model::Mode;

/// What `--apisock` looks like at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiSocket {
    /// A file is at the path.
    pub exists: bool,
    /// Something accepts connections on it.
    pub connectable: bool,
}

impl ApiSocket {
    /// A socket file nobody listens on: the mark a killed predecessor leaves.
    fn stale(self) -> bool {
        self.exists && !self.connectable
    }

    /// Looks at `path`.
    pub fn observe(path: &Path) -> Self {
        Self { exists: path.exists(), connectable: std::os::unix::net::UnixStream::connect(path).is_ok() }
    }
}

/// Everything the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    /// `fuse` or `singleton`.
    pub mode: Mode,
    /// `--apisock`, when given; without one nydusd can only serve.
    pub api_socket: Option<ApiSocket>,
    /// `--upgrade`.
    pub upgrade: bool,
    /// FUSE: the mountpoint is mounted already.
    pub mountpoint_mounted: bool,
    /// Singleton: `/dev/cachefiles` opens read-write.
    pub cachefiles_opens: bool,
}

/// What nydusd does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Mount (or bind) and report RUNNING.
    Serve,
    /// Report INIT and wait for `takeover`.
    AwaitTakeover,
    /// Exit 1 with this message.
    Refuse(&'static str),
}

/// nydusd's message when fscache is unsupported: a bare EINVAL, flattened at start-up.
pub(crate) const FSCACHE_UNSUPPORTED: &str = r#"Os { code: 22, kind: InvalidInput, message: "Invalid argument" }"#;

/// The decision. FUSE waits on `--upgrade`, or when a predecessor crashed: its mount is
/// still there and its socket is stale. Singleton waits on `--upgrade`, or when the device
/// cannot be opened and a stale socket says a predecessor holds it; without either the
/// missing device is an error.
pub(crate) fn decide(observed: &Observed) -> Decision {
    let Some(socket) = observed.api_socket else { return Decision::Serve };
    let crashed = match observed.mode {
        Mode::Fuse => observed.mountpoint_mounted && socket.stale(),
        Mode::Singleton => !observed.cachefiles_opens && socket.stale(),
    };
    if observed.upgrade || crashed {
        return Decision::AwaitTakeover;
    }
    if observed.mode == Mode::Singleton && !observed.cachefiles_opens {
        return Decision::Refuse(FSCACHE_UNSUPPORTED);
    }
    Decision::Serve
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const LIVE: ApiSocket = ApiSocket { exists: true, connectable: true };
    const STALE: ApiSocket = ApiSocket { exists: true, connectable: false };
    const FRESH: ApiSocket = ApiSocket { exists: false, connectable: false };

    fn fuse(api_socket: Option<ApiSocket>, upgrade: bool, mounted: bool) -> Observed {
        Observed { mode: Mode::Fuse, api_socket, upgrade, mountpoint_mounted: mounted, cachefiles_opens: false }
    }

    fn singleton(api_socket: Option<ApiSocket>, upgrade: bool, device: bool) -> Observed {
        Observed { mode: Mode::Singleton, api_socket, upgrade, mountpoint_mounted: false, cachefiles_opens: device }
    }

    #[rstest]
    #[case::fresh_start(fuse(Some(FRESH), false, false), Decision::Serve)]
    #[case::upgrade(fuse(Some(FRESH), true, false), Decision::AwaitTakeover)]
    #[case::crash_leftovers(fuse(Some(STALE), false, true), Decision::AwaitTakeover)]
    #[case::stale_socket_without_a_mount(fuse(Some(STALE), false, false), Decision::Serve)]
    #[case::mounted_with_a_live_socket(fuse(Some(LIVE), false, true), Decision::Serve)]
    #[case::mounted_without_a_socket_file(fuse(Some(FRESH), false, true), Decision::Serve)]
    #[case::no_api_socket_even_on_upgrade(fuse(None, true, true), Decision::Serve)]
    fn fuse_daemons(#[case] observed: Observed, #[case] expected: Decision) {
        assert_eq!(decide(&observed), expected);
    }

    #[rstest]
    #[case::device_opens(singleton(Some(FRESH), false, true), Decision::Serve)]
    #[case::upgrade_with_the_device_held(singleton(Some(FRESH), true, false), Decision::AwaitTakeover)]
    #[case::predecessor_holds_the_device(singleton(Some(STALE), false, false), Decision::AwaitTakeover)]
    #[case::no_device_no_predecessor(singleton(Some(FRESH), false, false), Decision::Refuse(FSCACHE_UNSUPPORTED))]
    #[case::no_device_live_socket(singleton(Some(LIVE), false, false), Decision::Refuse(FSCACHE_UNSUPPORTED))]
    #[case::stale_socket_but_the_device_opens(singleton(Some(STALE), false, true), Decision::Serve)]
    #[case::no_api_socket(singleton(None, false, false), Decision::Serve)]
    fn singleton_daemons(#[case] observed: Observed, #[case] expected: Decision) {
        assert_eq!(decide(&observed), expected);
    }
}
