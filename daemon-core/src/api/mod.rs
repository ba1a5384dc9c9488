//! nydusd's management API: wire types and an HTTP client over its Unix socket.

pub mod client;
pub mod query;
pub mod types;

pub use client::{ClientError, ErrorKind, Exchange, ExchangeObserver, NydusdClient, RawResponse};
pub use types::{BuildTimeInfo, DaemonInfo, DaemonState, ErrorMessage, MountRequest};
