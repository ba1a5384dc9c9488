//! Any status and body from a daemon: the client's reading of it is a value or a typed
//! error, never a panic.
#![no_main]

use bytes::Bytes;
use daemon_core::api::client::{RawResponse, decode, interpret_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u16, &[u8])| {
    let (status, body) = input;
    let Ok(status) = hyper::StatusCode::from_u16(status) else { return };
    let reply = RawResponse { status, body: Bytes::copy_from_slice(body) };
    match interpret_reply(hyper::Method::GET, "/api/v1/daemon", reply) {
        Ok(body) => {
            let _ = decode::<daemon_core::DaemonInfo>("/api/v1/daemon", &body).map_err(|e| (e.kind(), e.to_string()));
            let _ = decode::<serde_json::Value>("/api/v1/metrics", &body);
        }
        Err(e) => {
            let _ = (e.kind(), e.status(), e.daemon_message(), e.to_string());
        }
    }
});
