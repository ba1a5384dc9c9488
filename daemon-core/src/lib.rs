//! The nydusd daemon lifecycle of nydus-snapshotter, as a library.
//!
//! ```text
//!   Daemon::create ──► spawn (argv from DaemonRecord) ──► client() waits for the socket
//!        │                                                   │
//!        │              wait_until_state(RUNNING) ◄──────────┘
//!        ▼
//!   mount / umount / takeover / start / exit over the API ──► terminate / wait
//! ```
//!
//! * [`api`]: the client's view of nydusd's wire types and the HTTP client for its socket.
//! * [`daemon`]: one daemon's record, command line, process, waits and API calls.
//! * [`manager`]: many daemons: records in the [`store`], start and verify, the death loop
//!   (restart, failover), hot upgrade, and recovery when the manager itself restarts.
//! * [`supervisor`] (with the crate's own `fdpass`): the Go supervisor's side of the state and fd handoff.
//! * [`monitor`]: death detection, one idle connection per daemon.
//! * [`store`]: the durable records (SQLite).
//! * [`mount`]: host mounts (FUSE waits and aborts, erofs over fscache, erofs images from a
//!   file or, before Linux 6.12, a loop device).
//! * [`rafs`]: instance records; [`layout`]: the directories under a root.
//! * [`wait`]: deadlines and the capped backoff of every wait.
//! * `crash_point` (the crate's own): named step boundaries where crash tests kill the manager.

// The face an embedder uses: the client, daemons, the manager, its store and layout,
// waits, and what the manager builds on (monitor, mounts, supervisors, instances). The
// raw fd passing, loop devices and crash points are the crate's own; its integration
// tests reach them through the `internals` feature, which promises nothing.
pub mod api;
pub mod daemon;
pub mod layout;
pub mod manager;
pub mod monitor;
pub mod mount;
pub mod rafs;
pub mod store;
pub mod supervisor;
pub mod wait;

/// Declares modules that are public only with the `internals` feature.
macro_rules! internal {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal! {
    crash_point;
    fdpass;
    loop_device;
}

pub use api::{ClientError, DaemonInfo, DaemonState, MountRequest, NydusdClient};
pub use daemon::{Daemon, DaemonError, DaemonOptions};
pub use layout::Layout;
pub use wait::Timeouts;
