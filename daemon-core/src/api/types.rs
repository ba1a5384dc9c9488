//! nydusd's wire types (crate `nydusd-api`) as nydus-snapshotter's Go client sees them:
//! the reported state widened by the client's own labels.

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

impl From<nydusd_api::State> for DaemonState {
    fn from(state: nydusd_api::State) -> Self {
        match state {
            nydusd_api::State::Init => Self::Init,
            nydusd_api::State::Ready => Self::Ready,
            nydusd_api::State::Running => Self::Running,
            nydusd_api::State::Stopped => Self::Stopped,
        }
    }
}

/// `GET /api/v1/daemon` as the client reads it: any state string is accepted, an unknown
/// one as [`DaemonState::Unknown`], as the Go client compares plain strings.
pub type DaemonInfo = nydusd_api::DaemonInfo<DaemonState>;

pub use nydusd_api::{BuildTimeInfo, ErrorMessage, MountRequest};

#[cfg(test)]
mod tests {
    use super::*;

    /// The client reads each state nydusd sends as the state of the same name.
    #[test]
    fn every_state_nydusd_reports_reads_as_its_client_state() {
        for state in nydusd_api::State::ALL {
            let wire = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<DaemonState>(&wire).unwrap(), DaemonState::from(state), "{wire}");
        }
    }

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
}
