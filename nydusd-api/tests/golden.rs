//! Every wire type against bodies a real nydusd sent (or, for the mount request, was sent
//! and accepted), copied from `shared/reference/real-nydusd-2.2.md` and
//! `real-nydusd-framing.md` with `$PROBE` standing for the probe's directory.
//!
//! A body decodes, and encodes back to the same bytes: the field set, the field order and
//! the spelling of every value are nydusd's.

use nydusd_api::{DaemonInfo, ErrorMessage, MountRequest, State};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn golden(name: &str) -> String {
    let path = format!("{}/tests/golden/{name}", manifest_dir());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim_end().to_owned()
}

/// Decodes `name` as `T` and checks that encoding gives back nydusd's bytes.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let raw = golden(name);
    let value: T = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(serde_json::to_string(&value).unwrap(), raw, "{name} re-encodes differently");
    value
}

#[test]
fn daemon_info_as_nydusd_2_2_sends_it() {
    let info: DaemonInfo = round_trip("daemon-v1-running-one-mount.json");
    assert_eq!(info.state, State::Running);
    assert_eq!(info.id.as_deref(), Some("daemon1"));
    assert_eq!(info.version.package_ver, "unknown", "the crates.io build has no version");
    let mounts = info.backend_collection.unwrap();
    assert_eq!(mounts.keys().collect::<Vec<_>>(), ["/"]);
}

#[test]
fn a_v2_daemon_info_has_no_collection() {
    let info: DaemonInfo = round_trip("daemon-v2-running.json");
    assert_eq!(info.backend_collection, None);
}

#[test]
fn the_collection_keeps_nydusd_order() {
    let info: DaemonInfo = round_trip("daemon-v1-running-two-mounts.json");
    assert_eq!((info.id, info.supervisor), (None, None));
    assert_eq!(info.backend_collection.unwrap().len(), 2);
}

#[test]
fn init_before_and_after_a_restore() {
    let waiting: DaemonInfo = round_trip("daemon-v1-init.json");
    assert_eq!(waiting.state, State::Init);
    let restored: DaemonInfo = round_trip("daemon-v1-init-restored.json");
    assert_eq!(restored.state, State::Init);
    assert!(!restored.backend_collection.unwrap().is_empty());
}

#[test]
fn daemon_info_as_nydusd_2_4_sends_it() {
    let info: DaemonInfo = round_trip("daemon-v1-running-2.4.json");
    assert_eq!(info.version.package_ver, "v2.4.4-8-g34e6071e");
    assert_eq!(info.version.git_commit.len(), 40);
}

#[test]
fn every_error_body_is_an_undefined_code_and_a_message() {
    for (name, message) in [
        ("error-configure.json", "Configure(ResponsePayloadType)"),
        ("error-parse-body.json", r#"ParseBody(Error("missing field `log_level`", line: 1, column: 17))"#),
        ("error-query-string.json", r#"QueryString("'mountpoint' should be specified in query string")"#),
        ("error-unexpected-event.json", r#"Configure(DaemonAbnormal(UnexpectedEvent("Start")))"#),
        ("error-no-route.json", "NoRoute"),
        ("error-bad-request.json", "BadRequest"),
    ] {
        let body: ErrorMessage = round_trip(name);
        assert_eq!(body, ErrorMessage::undefined(message), "{name}");
    }
}

#[test]
fn the_mount_request_nydusd_accepted() {
    let raw = golden("mount-request.json");
    let request: MountRequest = serde_json::from_str(&raw).unwrap();
    assert_eq!((request.source.as_str(), request.fs_type.as_str()), ("$PROBE/v6/bootstrap", "rafs"));
    assert!(request.config.starts_with("{\n  \"device\""), "the config is a JSON string");
    assert_eq!(request.prefetch_files, None);
    assert_eq!(serde_json::to_string(&request).unwrap(), raw, "absent prefetch_files stays absent");
}

/// READY and STOPPED never appear in a transcript (STOPPED is not observable, §3.1 of
/// `nydusd-api.md`; READY only after a takeover), so their spelling is pinned by the
/// state machine's names, which nydusd upper-cases.
#[test]
fn states_are_nydusd_upper_case_names_and_nothing_else() {
    for state in State::ALL {
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(json, format!("\"{}\"", format!("{state:?}").to_uppercase()));
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }
    let err = serde_json::from_str::<State>("\"UNKNOWN\"").unwrap_err();
    assert!(err.to_string().starts_with("unknown variant `UNKNOWN`, expected one of `INIT`"), "{err}");
}

#[test]
fn the_version_text_nydusd_2_2_prints() {
    let path = format!("{}/tests/golden/version-2.2.txt", manifest_dir());
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(text.len(), 0o233, "the bytes of `od -c` in the transcript");
    let info = nydusd_api::version_output::parse(&text);
    assert_eq!((info.package_ver.as_str(), info.git_commit.as_str()), ("unknown", "unknown"));
    assert_eq!(info.build_time, "2026-11-29T04:17:14.071448572Z");
    assert_eq!((info.profile.as_str(), info.rustc.as_str()), ("release", "rustc 1.95.0 (59807616e 2026-04-14)"));
}

/// This package's directory at run time (nextest sets it to the remapped checkout when an
/// archived suite runs elsewhere), else at build time.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned())
}
