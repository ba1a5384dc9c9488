//! The nydusd daemon lifecycle of nydus-snapshotter, as a library.
//!
//! ```text
//!   Daemon::create ──► spawn (argv from ConfigState) ──► client() waits for the socket
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
//! * [`supervisor`] and [`fdpass`]: the Go supervisor's side of the state and fd handoff.
//! * [`monitor`]: death detection, one idle connection per daemon.
//! * [`store`]: the durable records (SQLite).
//! * [`mount`]: host mounts (FUSE waits and aborts, erofs over fscache, erofs images from a
//!   file or, before Linux 6.12, a [`loop_device`]).
//! * [`rafs`]: instance records; [`layout`]: the directories under a root.
//! * [`pidfd`]: the raw syscalls; [`wait`]: deadlines and the capped backoff of every wait.
//! * [`crash_point`]: named step boundaries where crash tests kill the manager.

pub mod api;
pub mod crash_point;
pub mod daemon;
pub mod fdpass;
pub mod layout;
pub mod loop_device;
pub mod manager;
pub mod monitor;
pub mod mount;
pub mod pidfd;
pub mod rafs;
pub mod store;
pub mod supervisor;
pub mod wait;

pub use api::{ClientError, DaemonInfo, DaemonState, MountRequest, NydusdClient};
pub use daemon::{Daemon, DaemonError, DaemonOptions};
pub use layout::Layout;
pub use wait::Timeouts;
