//! The raw bytes of every reply the mock serves, pinned by insta snapshots. Each snapshot
//! was checked against nydusd's framing (`nydusd-api.md` §1.3, `real-nydusd-2.2.md` §4).

mod common;

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;

use testkit::{MockProcess, exchange};

fn body_req(method: &str, target: &str, body: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: unix\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn bare_req(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: unix\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

#[test]
fn wire_replies_of_every_endpoint() {
    let mock = MockProcess::start(common::mock(), &[]);
    let boot = testkit::write_stand_in(&mock.path("boot")).unwrap();
    let mount =
        serde_json::json!({ "source": boot, "fs_type": "rafs", "config": testkit::ACCEPTED_CONFIG }).to_string();
    let mount = mount.as_str();
    let refused_config = mount.replace("localfs", "nope");
    let missing_bootstrap = mount.replace(&boot, "/nonexistent/boot");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("get_daemon_v1", bare_req("GET", "/api/v1/daemon")),
        ("get_daemon_v2", bare_req("GET", "/api/v2/daemon")),
        ("put_daemon_log_level", body_req("PUT", "/api/v1/daemon", r#"{"log_level":"debug"}"#)),
        ("put_daemon_bad_level", body_req("PUT", "/api/v2/daemon", r#"{"log_level":"loud"}"#)),
        ("get_events", bare_req("GET", "/api/v1/daemon/events")),
        ("mount", body_req("POST", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("get_daemon_with_mount", bare_req("GET", "/api/v1/daemon")),
        ("mount_again", body_req("POST", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("mount_refused_config", body_req("POST", "/api/v1/mount?mountpoint=/snap3", &refused_config)),
        ("mount_missing_bootstrap", body_req("POST", "/api/v1/mount?mountpoint=/snap3", &missing_bootstrap)),
        ("mount_missing_source", body_req("POST", "/api/v1/mount?mountpoint=/snap2", r#"{"config":"{}"}"#)),
        ("mount_no_mountpoint", body_req("POST", "/api/v1/mount", mount)),
        ("remount", body_req("PUT", "/api/v1/mount?mountpoint=/snap1", mount)),
        ("umount", bare_req("DELETE", "/api/v1/mount?mountpoint=/snap1")),
        ("umount_again", bare_req("DELETE", "/api/v1/mount?mountpoint=/snap1")),
        ("start_while_running", bare_req("PUT", "/api/v1/daemon/start")),
        ("takeover_while_running", bare_req("PUT", "/api/v1/daemon/fuse/takeover")),
        ("start_with_body", body_req("PUT", "/api/v1/daemon/start", "{}")),
        ("head_daemon", bare_req("HEAD", "/api/v1/daemon")),
        ("trailing_slash", bare_req("GET", "/api/v1/daemon/")),
        ("relative_target", bare_req("GET", "api/v1/daemon")),
        ("unknown_method", b"FOO /api/v1/daemon HTTP/1.1\r\n\r\n".to_vec()),
        ("bad_version", b"GET /api/v1/daemon HTTP/2.0\r\n\r\n".to_vec()),
        ("header_without_colon", b"GET /api/v1/daemon/events HTTP/1.1\r\nBadHeader\r\n\r\n".to_vec()),
        ("bad_content_length", b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: abc\r\n\r\n".to_vec()),
        ("body_too_large", b"PUT /api/v1/daemon HTTP/1.1\r\nContent-Length: 51201\r\n\r\n".to_vec()),
        ("chunked_body", b"PUT /api/v1/daemon HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n15\r\n{\"log_level\":\"info\"}\r\n0\r\n\r\n".to_vec()),
    ];
    insta::assert_snapshot!(transcript(&mock, cases));
}

#[test]
fn exit_replies_then_removes_the_socket_and_exits_zero() {
    let mut mock = MockProcess::start(common::mock(), &[]);
    let reply = exchange(&mock.sock, &bare_req("PUT", "/api/v1/daemon/exit"));
    assert_eq!(reply, "HTTP/1.1 204 \r\nServer: Nydus API\r\nConnection: keep-alive\r\n\r\n");
    let status = mock.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!mock.sock.exists());
}

/// Registry credentials and a blob cache in the mount configuration make the config map and
/// every counter family non-empty.
const REGISTRY_CONFIG: &str = r#"{\"device\":{\"id\":\"/snap1\",\"backend\":{\"type\":\"registry\",\"config\":{\"host\":\"r.io\",\"repo\":\"lib/a\",\"auth\":\"dTpw\"}},\"cache\":{\"type\":\"blobcache\",\"config\":{\"work_dir\":\"/cache\"}}},\"mode\":\"direct\",\"iostats_files\":true}"#;

#[test]
fn wire_replies_of_metrics_config_and_backend_in_fuse_mode() {
    let mock = MockProcess::start(common::mock(), &[]);
    let boot = testkit::write_stand_in(&mock.path("boot")).unwrap();
    let mount = format!(r#"{{"source":"{boot}","fs_type":"rafs","config":"{REGISTRY_CONFIG}"}}"#);
    let passthrough = r#"{"source":"/srv","fs_type":"passthrough_fs","config":""}"#;
    let blob = r#"{"type":"bootstrap","id":"b1","domain_id":"d1","config":{"id":"c","backend_type":"registry","backend_config":{"host":"h","repo":"r"},"cache_type":"fscache","cache_config":{"work_dir":"/w"},"metadata_path":"/m"}}"#;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("metrics_none_registered", bare_req("GET", "/api/v1/metrics")),
        ("mount", body_req("POST", "/api/v1/mount?mountpoint=/snap1", &mount)),
        ("metrics_the_only_set", bare_req("GET", "/api/v1/metrics")),
        ("metrics_by_id", bare_req("GET", "/api/v1/metrics?id=/snap1")),
        ("metrics_unknown_id", bare_req("GET", "/api/v1/metrics?id=/nope")),
        ("metrics_files", bare_req("GET", "/api/v1/metrics/files?id=/snap1")),
        ("metrics_files_latest", bare_req("GET", "/api/v1/metrics/files?id=/snap1&latest=true")),
        ("metrics_pattern", bare_req("GET", "/api/v1/metrics/pattern")),
        ("metrics_pattern_unknown", bare_req("GET", "/api/v1/metrics/pattern?id=/x")),
        ("metrics_backend", bare_req("GET", "/api/v1/metrics/backend?id=/snap1")),
        ("metrics_blobcache", bare_req("GET", "/api/v1/metrics/blobcache?id=/snap1")),
        ("metrics_blobcache_unknown", bare_req("GET", "/api/v1/metrics/blobcache?id=/x")),
        ("metrics_inflight_idle", bare_req("GET", "/api/v1/metrics/inflight")),
        ("backend_info", bare_req("GET", "/api/v1/daemon/backend?mountpoint=/snap1")),
        ("backend_info_nothing_there", bare_req("GET", "/api/v1/daemon/backend?mountpoint=/x")),
        ("backend_info_no_mountpoint", bare_req("GET", "/api/v1/daemon/backend")),
        ("backend_info_wrong_method", bare_req("DELETE", "/api/v1/daemon/backend")),
        ("mount_passthrough", body_req("POST", "/api/v1/mount?mountpoint=/pt", passthrough)),
        ("backend_info_passthrough", bare_req("GET", "/api/v1/daemon/backend?mountpoint=/pt")),
        ("umount", bare_req("DELETE", "/api/v1/mount?mountpoint=/snap1")),
        ("metrics_survive_umount", bare_req("GET", "/api/v1/metrics?id=/snap1")),
        ("config_raw", bare_req("GET", "/api/v1/config")),
        ("config_by_id", bare_req("GET", "/api/v1/config?id=/snap1")),
        ("config_update", body_req("PUT", "/api/v1/config?id=/", r#"{"registry_auth":"bmV3"}"#)),
        ("config_update_unknown_key", body_req("PUT", "/api/v1/config?id=/", r#"{"colour":"red"}"#)),
        ("config_update_not_a_string", body_req("PUT", "/api/v1/config", r#"{"proxy_url":1}"#)),
        ("config_after_updates", bare_req("GET", "/api/v1/config?id=/")),
        ("blobs_create_in_fuse_mode", body_req("PUT", "/api/v2/blobs", blob)),
        ("blobs_create_without_config", body_req("PUT", "/api/v2/blobs", r#"{"type":"bootstrap","id":"b"}"#)),
        ("blobs_create_missing_id", body_req("PUT", "/api/v2/blobs", r#"{"type":"bootstrap"}"#)),
        ("blobs_delete_in_fuse_mode", bare_req("DELETE", "/api/v2/blobs?domain_id=d1&blob_id=b1")),
        ("blobs_delete_file_in_fuse_mode", bare_req("DELETE", "/api/v2/blobs?blob_id=b1")),
        ("blobs_delete_without_params", bare_req("DELETE", "/api/v2/blobs")),
        ("blobs_get_without_domain", bare_req("GET", "/api/v2/blobs")),
    ];
    insta::assert_snapshot!(transcript(&mock, cases));
}

#[test]
fn wire_replies_of_the_singleton_daemon() {
    let mock = MockProcess::start_singleton(common::mock(), &["--fscache", "/tmp"]);
    let meta = mock.path("image.boot");
    std::fs::write(&meta, b"rafs v6 stand-in").unwrap();
    // A fixed work directory keeps the reply lengths in the snapshot stable.
    let work = "/tmp";
    let blob = |id: &str, metadata: &str| {
        format!(
            r#"{{"type":"bootstrap","id":"{id}","domain_id":"d1","config":{{"id":"c1","backend_type":"registry","backend_config":{{"host":"h","repo":"r"}},"cache_type":"fscache","cache_config":{{"work_dir":"{work}"}},"metadata_path":"{metadata}"}}}}"#
        )
    };
    let meta = meta.display().to_string();
    let datablob = blob("b9", &meta).replace(r#""type":"bootstrap""#, r#""type":"datablob""#);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("get_daemon_v1", bare_req("GET", "/api/v1/daemon")),
        ("mount", body_req("POST", "/api/v1/mount?mountpoint=/a", r#"{"source":"/b","fs_type":"rafs","config":""}"#)),
        ("backend_info", bare_req("GET", "/api/v1/daemon/backend?mountpoint=/a")),
        ("metrics_inflight", bare_req("GET", "/api/v1/metrics/inflight")),
        ("metrics_fs", bare_req("GET", "/api/v1/metrics")),
        ("blobs_create", body_req("PUT", "/api/v2/blobs", &blob("b1", &meta))),
        ("blobs_create_again", body_req("PUT", "/api/v2/blobs", &blob("b1", &meta))),
        ("blobs_create_missing_bootstrap", body_req("PUT", "/api/v2/blobs", &blob("b2", "/nonexistent"))),
        ("blobs_create_datablob", body_req("PUT", "/api/v2/blobs", &datablob)),
        ("metrics_backend_of_fscache_blobs", bare_req("GET", "/api/v1/metrics/backend?id=/")),
        ("metrics_blobcache", bare_req("GET", "/api/v1/metrics/blobcache?id=c1")),
        ("blobs_delete_missing", bare_req("DELETE", "/api/v2/blobs?domain_id=d1&blob_id=nope")),
        ("blobs_delete", bare_req("DELETE", "/api/v2/blobs?domain_id=d1&blob_id=b1")),
        ("blobs_delete_domain_always_succeeds", bare_req("DELETE", "/api/v2/blobs?domain_id=d1")),
        ("blobs_delete_file", bare_req("DELETE", "/api/v2/blobs?blob_id=b1")),
        ("sendfd_without_supervisor", bare_req("PUT", "/api/v1/daemon/fuse/sendfd")),
    ];
    insta::assert_snapshot!(transcript(&mock, cases));
}

#[test]
fn singleton_without_fscache_refuses_to_cull_blob_files() {
    let mock = MockProcess::start_singleton(common::mock(), &[]);
    let reply = exchange(&mock.sock, &bare_req("DELETE", "/api/v2/blobs?blob_id=b1"));
    assert!(reply.starts_with("HTTP/1.1 501 "), "{reply}");
    assert!(reply.ends_with(r#""message":"DeleteBlobFile(DaemonAbnormal(Unsupported))"}"#), "{reply}");
}

#[test]
fn get_blobs_with_a_domain_aborts_like_nydusd_or_answers_500_when_told_not_to() {
    let mut aborting = MockProcess::start(common::mock(), &[]);
    let mut s = aborting.connect();
    s.write_all(&bare_req("GET", "/api/v2/blobs?domain_id=d1")).unwrap();
    let mut rest = Vec::new();
    // No reply: the connection ends when the process dies.
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    let status = aborting.child.wait().unwrap();
    assert_eq!(status.signal(), Some(nix::libc::SIGABRT));
    assert!(aborting.sock.exists(), "an aborted daemon leaves its socket behind");

    let polite = MockProcess::start(common::mock(), &["--mock-no-abort"]);
    let reply = exchange(&polite.sock, &bare_req("GET", "/api/v2/blobs?domain_id=d1"));
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.ends_with(r#""message":"GetBlobObjects(ResponseRecv(RecvError))"}"#), "{reply}");
}

fn transcript(mock: &MockProcess, cases: Vec<(&str, Vec<u8>)>) -> String {
    let mut transcript = String::new();
    for (name, raw) in cases {
        let reply = redact(&exchange(&mock.sock, &raw));
        transcript.push_str(&format!("=== {name}\n{}\n\n", reply.replace("\r\n", "\\r\\n\n")));
    }
    transcript
}

#[test]
fn fuse_sendfd_without_a_supervisor_aborts_like_nydusd_or_answers_500_when_told_not_to() {
    let mut aborting = MockProcess::start(common::mock(), &[]);
    let mut s = aborting.connect();
    s.write_all(&bare_req("PUT", "/api/v1/daemon/fuse/sendfd")).unwrap();
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    assert_eq!(aborting.child.wait().unwrap().signal(), Some(nix::libc::SIGABRT));

    let polite = MockProcess::start(common::mock(), &["--mock-no-abort"]);
    let reply = exchange(&polite.sock, &bare_req("PUT", "/api/v1/daemon/fuse/sendfd"));
    assert!(reply.starts_with("HTTP/1.1 500 "), "{reply}");
    assert!(reply.contains("MissingSupervisorPath"), "{reply}");
}
/// Replaces the volatile `mounted_time` values.
pub fn redact(reply: &str) -> String {
    let mut out = String::new();
    let mut rest = reply;
    while let Some(i) = rest.find("\"mounted_time\":\"") {
        let start = i + "\"mounted_time\":\"".len();
        out.push_str(&rest[..start]);
        let end = rest[start..].find('"').unwrap();
        out.push_str("[time]");
        rest = &rest[start + end..];
    }
    out.push_str(rest);
    out.replace(&format!("-mock-nydusd.{}", env!("CARGO_PKG_VERSION")), "-mock-nydusd.[version]")
}
