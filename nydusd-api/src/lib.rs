//! nydusd's management API on the wire: the JSON bodies nydusd sends and accepts, and the
//! states it reports, as nydusd itself defines them.
//!
//! This crate is the contract between the two sides that must not share code otherwise:
//! daemon-core's client (which adds its own view, such as a state it could not read) and
//! mock-nydusd's server. Each type is pinned by bodies that a real nydusd sent, taken from
//! the transcripts in `shared/reference/real-nydusd-2.2.md` (see `tests/golden.rs`), so a
//! change that drifts from nydusd fails here and not in one side's tests.
//!
//! Field order matters: nydusd emits its objects in declaration order, so the order of the
//! fields here is the order on the wire.

mod pending_requests;
mod state;
pub mod version_output;

pub use pending_requests::PendingRequestPolicy;
pub use state::State;

use serde::{Deserialize, Serialize};

/// Build information of a nydusd binary (`version` in [`DaemonInfo`], and `nydusd
/// --version`, read by [`version_output::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildTimeInfo {
    /// `git describe --tags` of the build; `unknown` in the crates.io build of 2.2.
    pub package_ver: String,
    /// Full commit hash; the snapshotter compares it with `--version` to decide a hot upgrade.
    pub git_commit: String,
    /// ISO-8601 build time.
    pub build_time: String,
    /// `release` or `debug`.
    pub profile: String,
    /// Compiler version line.
    pub rustc: String,
}

/// `GET /api/v1/daemon` (and v2) reply: `version, id, supervisor, state,
/// backend_collection` in that order.
///
/// Generic over the state so that a client can read it into a view of its own (one with a
/// value for a state it does not know); nydusd's side uses [`State`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo<S = State> {
    /// Build information.
    #[serde(default)]
    pub version: BuildTimeInfo,
    /// `--id`, or null.
    #[serde(default)]
    pub id: Option<String>,
    /// `--supervisor`, or null.
    #[serde(default)]
    pub supervisor: Option<String>,
    /// Current state.
    pub state: S,
    /// Mounted instances keyed by in-FUSE path (v1, FUSE mode), or null (v2, singleton).
    #[serde(default)]
    pub backend_collection: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The error body nydusd sends with every non-2xx status it generates itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Always [`ErrorMessage::UNDEFINED`] in real nydusd.
    #[serde(default)]
    pub code: String,
    /// Rust `Debug` text of nydusd's internal error, e.g.
    /// `Configure(DaemonAbnormal(UnexpectedEvent("Start")))`.
    #[serde(default)]
    pub message: String,
}

impl ErrorMessage {
    /// The only code nydusd ever sends.
    pub const UNDEFINED: &'static str = "UNDEFINED";

    /// An error body with nydusd's code.
    pub fn undefined(message: impl Into<String>) -> Self {
        Self { code: Self::UNDEFINED.to_owned(), message: message.into() }
    }
}

/// The body of `POST`/`PUT /api/v1/mount`, nydusd's `ApiMountCmd`: with the same shape and
/// field order, serde_json's parse errors read exactly like nydusd's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Bootstrap (RAFS metadata) path.
    pub source: String,
    /// `rafs` or a passthrough spelling; nydusd defaults it to empty and then rejects that.
    #[serde(default)]
    pub fs_type: String,
    /// The instance's RAFS configuration, as a JSON *string*.
    pub config: String,
    /// Absolute paths to prefetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch_files: Option<Vec<String>>,
}

impl MountRequest {
    /// A RAFS mount request, as the snapshotter's `NewMountRequest` builds it.
    pub fn rafs(source: impl Into<String>, config: impl Into<String>) -> Self {
        Self { source: source.into(), fs_type: "rafs".to_owned(), config: config.into(), prefetch_files: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_request_missing_source_is_reported_like_nydusd() {
        let err = serde_json::from_str::<MountRequest>(r#"{"config":"{}"}"#).unwrap_err();
        assert_eq!(err.to_string(), "missing field `source` at line 1 column 15");
    }
}
