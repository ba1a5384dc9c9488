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
    /// A known path with a method/body combination it does not handle.
    BadRequest,
    /// An unknown path.
    NoRoute,
}

/// The wrapper name nydusd puts around errors of this route (§1.5).
pub fn error_wrapper(route: &Route) -> &'static str {
    match route {
        Route::DaemonInfo { .. } => "DaemonInfo",
        Route::Configure(_) | Route::Start | Route::Exit => "Configure",
        Route::Events => "Events",
        Route::SendFd | Route::Takeover => "Upgrade",
        Route::Mount { .. } | Route::Remount { .. } | Route::Umount { .. } | Route::MissingMountpoint => "Mount",
        Route::BadRequest | Route::NoRoute => "",
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
        (path, _, _) if is_known_path(path) => Route::BadRequest,
        // An empty path (target neither `/...` nor `http://...`) is a parse failure: BadRequest.
        ("", _, _) => Route::BadRequest,
        _ => Route::NoRoute,
    }
}

/// The paths this mock models. nydusd's other paths (backend, metrics, config, v2 blobs)
/// are not modelled yet and answer `NoRoute`, as they would on a nydusd built without them.
const KNOWN_PATHS: [&str; 8] = [
    "/api/v1/daemon",
    "/api/v2/daemon",
    "/api/v1/daemon/events",
    "/api/v1/daemon/start",
    "/api/v1/daemon/exit",
    "/api/v1/daemon/fuse/sendfd",
    "/api/v1/daemon/fuse/takeover",
    "/api/v1/mount",
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
        assert_eq!(route(&req("GET", "/api/v1/daemon/", None)), Route::NoRoute);
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
}
