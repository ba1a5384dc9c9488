//! Wire types of nydusd's management API, as nydus-snapshotter's Go client sees them.
//!
//! Field order matters: mock-nydusd serialises these same types, and nydusd emits its
//! objects in declaration order, so the order here is the order on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A daemon state as reported by nydusd in `GET /api/v1/daemon`, plus the states the
/// snapshotter uses for itself (`UNKNOWN` when it could not ask, `DIED`/`DESTROYED` as labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonState {
    /// Could not ask, or nydusd said something we do not know.
    Unknown,
    /// Waiting for a takeover (upgrade or failover start-up).
    Init,
    /// Taken over, not yet serving.
    Ready,
    /// Serving.
    Running,
    /// The state machine has terminated; the process is about to exit.
    Stopped,
    /// Snapshotter label: the process died.
    Died,
    /// Snapshotter label: the daemon was destroyed.
    Destroyed,
}

impl DaemonState {
    /// Every state nydusd itself can report (`nydusd-api.md` §3.1).
    pub const REPORTED: [DaemonState; 4] = [Self::Init, Self::Ready, Self::Running, Self::Stopped];

    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::Init => "INIT",
            Self::Ready => "READY",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Died => "DIED",
            Self::Destroyed => "DESTROYED",
        }
    }

    /// Parses a wire string; anything unrecognised is `Unknown`, as in the Go client
    /// where the state is a plain string compared against constants.
    pub fn from_wire(s: &str) -> Self {
        match s {
            "INIT" => Self::Init,
            "READY" => Self::Ready,
            "RUNNING" => Self::Running,
            "STOPPED" => Self::Stopped,
            "DIED" => Self::Died,
            "DESTROYED" => Self::Destroyed,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DaemonState {
    type Err = UnknownState;

    /// Strict parse for user input: unlike [`DaemonState::from_wire`], unknown text is an error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Self::from_wire(s) {
            Self::Unknown if s != "UNKNOWN" => Err(UnknownState(s.to_owned())),
            state => Ok(state),
        }
    }
}

/// A state name that is not one of the known wire strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown daemon state `{0}` (expected one of UNKNOWN, INIT, READY, RUNNING, STOPPED, DIED, DESTROYED)")]
pub struct UnknownState(pub String);

impl Serialize for DaemonState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for DaemonState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::from_wire(&s))
    }
}

/// Build information of a nydusd binary (`version` in DaemonInfo, and `nydusd --version`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildTimeInfo {
    /// `git describe --tags` of the build.
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

/// `GET /api/v1/daemon` reply. nydusd emits `version, id, supervisor, state,
/// backend_collection` in that order; the Go client reads only id, version and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonInfo {
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
    pub state: DaemonState,
    /// Mounted instances keyed by in-FUSE path (v1, FUSE mode), or null.
    #[serde(default)]
    pub backend_collection: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The error body nydusd sends with every non-2xx status it generates itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// Always `UNDEFINED` in real nydusd.
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

/// The body of `POST`/`PUT /api/v1/mount`. Shape and field order are nydusd's `ApiMountCmd`,
/// so that serde_json's parse errors in the mock read exactly like nydusd's.
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
    fn unknown_wire_state_decodes_as_unknown_but_strict_parse_rejects_it() {
        let info: DaemonInfo = serde_json::from_str(r#"{"state":"UPGRADING","id":null}"#).unwrap();
        assert_eq!(info.state, DaemonState::Unknown);
        assert!("UPGRADING".parse::<DaemonState>().is_err());
        assert_eq!("UNKNOWN".parse::<DaemonState>().unwrap(), DaemonState::Unknown);
    }

    #[test]
    fn daemon_info_serialises_in_nydusd_field_order() {
        let info = DaemonInfo {
            version: BuildTimeInfo::default(),
            id: None,
            supervisor: None,
            state: DaemonState::Running,
            backend_collection: Some(serde_json::Map::new()),
        };
        insta::assert_snapshot!(serde_json::to_string(&info).unwrap(), @r#"{"version":{"package_ver":"","git_commit":"","build_time":"","profile":"","rustc":""},"id":null,"supervisor":null,"state":"RUNNING","backend_collection":{}}"#);
    }

    #[test]
    fn go_client_view_of_daemon_info_ignores_unknown_fields() {
        let raw = r#"{"version":{"package_ver":"v2.2.0","git_commit":"abc","build_time":"t","profile":"release","rustc":"r"},"id":"d1","supervisor":"/s.sock","state":"INIT","backend_collection":null,"extra":1}"#;
        let info: DaemonInfo = serde_json::from_str(raw).unwrap();
        assert_eq!(info.id.as_deref(), Some("d1"));
        assert_eq!(info.version.git_commit, "abc");
        assert_eq!(info.state, DaemonState::Init);
    }

    #[test]
    fn mount_request_missing_source_is_reported_like_nydusd() {
        let err = serde_json::from_str::<MountRequest>(r#"{"config":"{}"}"#).unwrap_err();
        assert_eq!(err.to_string(), "missing field `source` at line 1 column 15");
    }
}
