//! The persisted part of a daemon: Go's `ConfigState`, which is a record, not a state.

use std::path::PathBuf;

use nydusd_api::PendingRequestPolicy;
use serde::{Deserialize, Serialize};

/// Whether a daemon serves one RAFS instance or many.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonMode {
    /// One instance, mounted by nydusd itself from its command line.
    #[default]
    Dedicated,
    /// Many instances, mounted through the API under one FUSE mountpoint (or fscache).
    Shared,
}

/// How instances reach the kernel.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsDriver {
    /// nydusd serves a FUSE mount.
    #[default]
    Fusedev,
    /// The kernel mounts erofs over fscache; nydusd runs as `singleton`.
    Fscache,
}

/// The persisted fields of a daemon. Serialised with the Go field names so that a record
/// reads the same as the one nydus-snapshotter keeps in its database.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// Daemon id (see [`super::id`]).
    #[serde(rename = "ID")]
    pub id: String,
    /// Pid of the current nydusd process, 0 when none was started.
    #[serde(rename = "ProcessID")]
    pub process_id: u32,
    /// API socket path.
    #[serde(rename = "APISocket")]
    pub api_socket: PathBuf,
    /// Dedicated or shared.
    #[serde(rename = "DaemonMode")]
    pub daemon_mode: DaemonMode,
    /// fusedev or fscache.
    #[serde(rename = "FsDriver")]
    pub fs_driver: FsDriver,
    /// Directory of `nydusd.log`.
    #[serde(rename = "LogDir")]
    pub log_dir: PathBuf,
    /// nydusd's `--log-level`.
    #[serde(rename = "LogLevel")]
    pub log_level: String,
    /// `--log-rotation-size` in MB, 0 for off.
    #[serde(rename = "LogRotationSize")]
    pub log_rotation_size: u32,
    /// Log to stdout instead of a file.
    #[serde(rename = "LogToStdout")]
    pub log_to_stdout: bool,
    /// Host mountpoint: the dedicated instance's FUSE mount, or the shared root.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    /// Supervisor socket path; empty when the daemon has none.
    #[serde(rename = "SupervisorPath")]
    pub supervisor_path: PathBuf,
    /// `--thread-num`, 0 for nydusd's default.
    #[serde(rename = "ThreadNum")]
    pub thread_num: u32,
    /// `--failover-policy` (fusedev only).
    #[serde(rename = "FailoverPolicy")]
    pub failover_policy: Option<PendingRequestPolicy>,
    /// Directory of this daemon's config files.
    #[serde(rename = "ConfigDir")]
    pub config_dir: PathBuf,
    /// Start time of the process (clock ticks since boot, `/proc/<pid>/stat` field 22):
    /// with the pid it identifies the process across a manager restart, so a recycled pid
    /// is never signalled. Not in upstream's record; absent in records it wrote.
    #[serde(rename = "ProcessStartTime", default, skip_serializing_if = "Option::is_none")]
    pub process_start_time: Option<u64>,
}

impl DaemonRecord {
    /// `<ConfigDir>/config.json` for the daemon, `<ConfigDir>/<instance>/config.json` for an instance.
    pub fn config_file(&self, instance: Option<&str>) -> PathBuf {
        match instance {
            None | Some("") => self.config_dir.join("config.json"),
            Some(id) => self.config_dir.join(id).join("config.json"),
        }
    }

    /// `<LogDir>/nydusd.log`.
    pub fn log_file(&self) -> PathBuf {
        self.log_dir.join("nydusd.log")
    }

    /// Shared or dedicated.
    pub fn is_shared(&self) -> bool {
        self.daemon_mode == DaemonMode::Shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_uses_go_field_names() {
        let state = DaemonRecord { id: "d1".into(), process_id: 7, ..Default::default() };
        insta::assert_snapshot!(serde_json::to_string(&state).unwrap(), @r#"{"ID":"d1","ProcessID":7,"APISocket":"","DaemonMode":"dedicated","FsDriver":"fusedev","LogDir":"","LogLevel":"","LogRotationSize":0,"LogToStdout":false,"Mountpoint":"","SupervisorPath":"","ThreadNum":0,"FailoverPolicy":null,"ConfigDir":""}"#);
    }

    #[test]
    fn config_file_paths_follow_the_go_layout() {
        let state = DaemonRecord { config_dir: "/r/config/d1".into(), ..Default::default() };
        assert_eq!(state.config_file(None), PathBuf::from("/r/config/d1/config.json"));
        assert_eq!(state.config_file(Some("snap")), PathBuf::from("/r/config/d1/snap/config.json"));
    }
}
