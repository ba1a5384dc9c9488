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
//! * [`api`]: wire types and the HTTP client for nydusd's Unix socket.
//! * [`daemon`]: one daemon's state, command line, process and API calls.
//! * [`wait`]: deadlines and the short capped backoff used by every wait.

pub mod api;
pub mod crash_point;
pub mod daemon;
pub mod fdpass;
pub mod layout;
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
