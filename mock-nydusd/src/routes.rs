//! nydusd's route table as one match (`nydusd-api.md` §2.1): exact paths, no prefix
//! matching, and method/body combinations checked per path.

use crate::http::Request;

/// What a request asks for, after routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// GET /api/v1/daemon (with `backend_collection`) or /api/v2/daemon (`v1 == false`).
    DaemonInfo {
        /// v1 includes the mounts.
        v1: bool,
    },
    /// PUT /api/v1|v2/daemon with `{"log_level":..}`.
    Configure(Vec<u8>),
    /// GET /api/v1/daemon/events.
    Events,
    /// PUT /api/v1/daemon/start.
    Start,
    /// PUT /api/v1/daemon/exit.
    Exit,
    /// PUT /api/v1/daemon/fuse/sendfd.
    SendFd,
    /// PUT /api/v1/daemon/fuse/takeover.
    Takeover,
    /// POST /api/v1/mount.
    Mount {
        /// In-FUSE mount path.
        mountpoint: String,
        /// `MountCmd` JSON.
        body: Vec<u8>,
    },
    /// PUT /api/v1/mount.
    Remount {
        /// In-FUSE mount path.
        mountpoint: String,
        /// `MountCmd` JSON.
        body: Vec<u8>,
    },
    /// DELETE /api/v1/mount.
    Umount {
        /// In-FUSE mount path.
        mountpoint: String,
    },
    /// `/api/v1/mount` without `mountpoint` (checked before the method).
    MissingMountpoint,
    /// GET /api/v1/daemon/backend?mountpoint=.
    BackendInfo {
        /// In-FUSE mount path.
        mountpoint: String,
    },
    /// GET /api/v1/daemon/backend without `mountpoint` (checked after the method).
    BackendInfoWithoutMountpoint,
    /// GET /api/v1/metrics[/files|/pattern|/backend|/blobcache].
    Metrics {
        /// Which counter family.
        kind: MetricsKind,
        /// `id` query parameter.
        id: Option<String>,
        /// `latest=true` on `/metrics/files`.
        latest: bool,
    },
    /// GET /api/v1/metrics/inflight.
    Inflight,
    /// GET /api/v1/config.
    GetConfig {
        /// `id` query parameter.
        id: Option<String>,
    },
    /// PUT /api/v1/config.
    PutConfig {
        /// `id` query parameter.
        id: Option<String>,
        /// JSON object of string values.
        body: Vec<u8>,
    },
    /// GET /api/v2/blobs with `domain_id` (the call that never succeeds).
    GetBlobs,
    /// PUT /api/v2/blobs with a `BlobCacheEntry`.
    CreateBlob(Vec<u8>),
    /// DELETE /api/v2/blobs with `domain_id` (maybe empty) and optional `blob_id`.
    DeleteBlobObject {
        /// `domain_id`.
        domain_id: String,
        /// `blob_id`, absent or empty meaning "the whole domain".
        blob_id: Option<String>,
    },
    /// DELETE /api/v2/blobs with only `blob_id`: cull cache files.
    DeleteBlobFile {
        /// `blob_id`.
        blob_id: String,
    },
    /// A known path with a method/body combination it does not handle.
    BadRequest,
    /// An unknown path.
    UnknownPath,
}

/// The metrics endpoints sharing the counter-set lookup rule (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsKind {
    /// `/api/v1/metrics`: FS global counters.
    Global,
    /// `/api/v1/metrics/files`.
    Files,
    /// `/api/v1/metrics/pattern`.
    Pattern,
    /// `/api/v1/metrics/backend`.
    Backend,
    /// `/api/v1/metrics/blobcache`.
    Blobcache,
}

impl MetricsKind {
    /// The wrapper nydusd puts around this endpoint's errors.
    pub fn wrapper(self) -> &'static str {
        match self {
            Self::Global => "GlobalMetrics",
            Self::Files => "FsFilesMetrics",
            Self::Pattern => "Pattern",
            Self::Backend => "BackendMetrics",
            Self::Blobcache => "BlobcacheMetrics",
        }
    }
}

/// The wrapper name nydusd puts around errors of this route (§1.5).
pub fn error_wrapper(route: &Route) -> &'static str {
    match route {
        Route::DaemonInfo { .. } => "DaemonInfo",
        Route::Configure(_) | Route::Start | Route::Exit => "Configure",
        Route::Events => "Events",
        Route::SendFd | Route::Takeover => "Upgrade",
        Route::Mount { .. } | Route::Remount { .. } | Route::Umount { .. } | Route::MissingMountpoint => "Mount",
        Route::BackendInfo { .. } | Route::BackendInfoWithoutMountpoint => "FsBackendInfo",
        Route::Metrics { kind, .. } => kind.wrapper(),
        Route::Inflight => "InflightMetrics",
        Route::GetConfig { .. } | Route::PutConfig { .. } => "Configure",
        Route::GetBlobs => "GetBlobObjects",
        Route::CreateBlob(_) => "CreateBlobObject",
        Route::DeleteBlobObject { .. } => "DeleteBlobObject",
        Route::DeleteBlobFile { .. } => "DeleteBlobFile",
        Route::BadRequest | Route::UnknownPath => "",
    }
}

/// Routes one request.
pub fn route(request: &Request) -> Route {
    let method = request.method.as_str();
    let body = request.body.clone();
    match (request.path.as_str(), method, body) {
        ("/api/v1/daemon", "GET", None) => Route::DaemonInfo { v1: true },
        ("/api/v2/daemon", "GET", None) => Route::DaemonInfo { v1: false },
        ("/api/v1/daemon" | "/api/v2/daemon", "PUT", Some(b)) => Route::Configure(b),
        ("/api/v1/daemon/events", "GET", None) => Route::Events,
        ("/api/v1/daemon/start", "PUT", None) => Route::Start,
        ("/api/v1/daemon/exit", "PUT", None) => Route::Exit,
        ("/api/v1/daemon/fuse/sendfd", "PUT", None) => Route::SendFd,
        ("/api/v1/daemon/fuse/takeover", "PUT", None) => Route::Takeover,
        ("/api/v1/mount", _, body) => match (request.query_param("mountpoint"), method, body) {
            (None, _, _) => Route::MissingMountpoint,
            (Some(mountpoint), "POST", Some(body)) => Route::Mount { mountpoint, body },
            (Some(mountpoint), "PUT", Some(body)) => Route::Remount { mountpoint, body },
            (Some(mountpoint), "DELETE", None) => Route::Umount { mountpoint },
            _ => Route::BadRequest,
        },
        ("/api/v1/daemon/backend", "GET", None) => match request.query_param("mountpoint") {
            Some(mountpoint) => Route::BackendInfo { mountpoint },
            None => Route::BackendInfoWithoutMountpoint,
        },
        ("/api/v1/metrics/inflight", "GET", None) => Route::Inflight,
        (path @ ("/api/v1/metrics" | "/api/v1/metrics/files" | "/api/v1/metrics/pattern"), "GET", None)
        | (path @ ("/api/v1/metrics/backend" | "/api/v1/metrics/blobcache"), "GET", None) => {
            let kind = match path {
                "/api/v1/metrics" => MetricsKind::Global,
                "/api/v1/metrics/files" => MetricsKind::Files,
                "/api/v1/metrics/pattern" => MetricsKind::Pattern,
                "/api/v1/metrics/backend" => MetricsKind::Backend,
                _ => MetricsKind::Blobcache,
            };
            // nydusd parses `latest` as a bool; anything but "true" is false.
            let latest = kind == MetricsKind::Files && request.query_param("latest").as_deref() == Some("true");
            Route::Metrics { kind, id: request.query_param("id"), latest }
        }
        ("/api/v1/config", "GET", None) => Route::GetConfig { id: request.query_param("id") },
        ("/api/v1/config", "PUT", Some(body)) => Route::PutConfig { id: request.query_param("id"), body },
        ("/api/v2/blobs", "GET", None) if request.query_param("domain_id").is_some() => Route::GetBlobs,
        ("/api/v2/blobs", "PUT", Some(body)) => Route::CreateBlob(body),
        ("/api/v2/blobs", "DELETE", None) => match (request.query_param("domain_id"), request.query_param("blob_id")) {
            (Some(domain_id), blob_id) => Route::DeleteBlobObject { domain_id, blob_id },
            (None, Some(blob_id)) => Route::DeleteBlobFile { blob_id },
            (None, None) => Route::BadRequest,
        },
        (path, _, _) if is_known_path(path) => Route::BadRequest,
        // An empty path (target neither `/...` nor `http://...`) is a parse failure: BadRequest.
        ("", _, _) => Route::BadRequest,
        _ => Route::UnknownPath,
    }
}

/// Every path in nydusd's route table (§2.1).
const KNOWN_PATHS: [&str; 17] = [
    "/api/v1/daemon",
    "/api/v2/daemon",
    "/api/v1/daemon/events",
    "/api/v1/daemon/start",
    "/api/v1/daemon/exit",
    "/api/v1/daemon/fuse/sendfd",
    "/api/v1/daemon/fuse/takeover",
    "/api/v1/mount",
    "/api/v1/daemon/backend",
    "/api/v1/metrics",
    "/api/v1/metrics/files",
    "/api/v1/metrics/pattern",
    "/api/v1/metrics/backend",
    "/api/v1/metrics/blobcache",
    "/api/v1/metrics/inflight",
    "/api/v1/config",
    "/api/v2/blobs",
];

fn is_known_path(path: &str) -> bool {
    KNOWN_PATHS.contains(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, body: Option<&str>) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.map(|b| b.as_bytes().to_vec()),
        }
    }

    #[test]
    fn exact_paths_only() {
        assert_eq!(route(&req("GET", "/api/v1/daemon", None)), Route::DaemonInfo { v1: true });
        assert_eq!(route(&req("GET", "/api/v1/daemon/", None)), Route::UnknownPath);
        assert_eq!(route(&req("GET", "/api/v1/daemon?x=1", None)), Route::DaemonInfo { v1: true });
    }

    #[test]
    fn method_and_body_presence_matter() {
        assert_eq!(route(&req("HEAD", "/api/v1/daemon", None)), Route::BadRequest);
        assert_eq!(route(&req("GET", "/api/v1/daemon", Some("{}"))), Route::BadRequest);
        assert_eq!(route(&req("PUT", "/api/v1/daemon/start", Some("{}"))), Route::BadRequest);
    }

    #[test]
    fn mount_checks_the_query_before_the_method() {
        assert_eq!(route(&req("GET", "/api/v1/mount", None)), Route::MissingMountpoint);
        assert_eq!(route(&req("GET", "/api/v1/mount?mountpoint=/a", None)), Route::BadRequest);
        assert_eq!(
            route(&req("DELETE", "/api/v1/mount?mountpoint=%2Fa", None)),
            Route::Umount { mountpoint: "/a".into() }
        );
    }

    #[test]
    fn backend_info_checks_the_method_before_the_query() {
        assert_eq!(route(&req("PUT", "/api/v1/daemon/backend", None)), Route::BadRequest);
        assert_eq!(route(&req("GET", "/api/v1/daemon/backend", None)), Route::BackendInfoWithoutMountpoint);
    }

    #[test]
    fn blob_delete_picks_object_or_file_by_its_parameters() {
        assert_eq!(
            route(&req("DELETE", "/api/v2/blobs?domain_id=&blob_id=b", None)),
            Route::DeleteBlobObject { domain_id: String::new(), blob_id: Some("b".into()) }
        );
        assert_eq!(
            route(&req("DELETE", "/api/v2/blobs?blob_id=b", None)),
            Route::DeleteBlobFile { blob_id: "b".into() }
        );
        assert_eq!(route(&req("DELETE", "/api/v2/blobs", None)), Route::BadRequest);
        assert_eq!(route(&req("GET", "/api/v2/blobs", None)), Route::BadRequest);
    }

    #[test]
    fn only_latest_true_switches_file_metrics_mode() {
        let latest = |q: &str| match route(&req("GET", &format!("/api/v1/metrics/files?{q}"), None)) {
            Route::Metrics { latest, .. } => latest,
            other => panic!("{other:?}"),
        };
        assert!(latest("latest=true"));
        assert!(!latest("latest=1"));
        assert!(!latest("id=/a"));
    }
}
