//! Any bytes on the mock's control socket: framed, then handled (scripts parsed, replaced,
//! removed; the journal and state read). Replies encode, nothing panics, and a script the
//! socket accepted reads back as one that parses again.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mock_nydusd::framing::Framer;
use mock_nydusd::journal::Journal;
use mock_nydusd::model::{Mode, Model, ModelOptions};
use mock_nydusd::script::{Script, ScriptRunner};
use mock_nydusd::server::Shared;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let options = ModelOptions {
        version: mock_nydusd::version::NydusdVersion::V2_4,
        shuffle_maps: false,
        id: Some("fuzz".into()),
        supervisor: None,
        mode: Mode::Fuse,
        build: Default::default(),
        abort_like_nydusd: false,
        fscache_dir: None,
        fuse: None,
        fscache_service: None,
    };
    let (shared, _shutdown_requested) =
        Shared::new(Model::new(options, "info".into()), Journal::default(), ScriptRunner::default(), 1, None);
    let shared = Arc::new(shared);
    for received in Framer::new().feed(data) {
        if received.rejected.is_some() {
            return;
        }
        for request in received.requests {
            let reply = runtime.block_on(mock_nydusd::control::handle(&shared, &request));
            let bytes = reply.encode();
            if request.method == "PUT" && request.path == "/script" && bytes.starts_with(b"HTTP/1.1 204 ") {
                let text = serde_json::to_string(shared.script.lock().unwrap().script()).expect("scripts serialise");
                if let Err(e) = Script::parse(&text, "read back") {
                    panic!("an accepted script does not parse again: {e}\n{text}");
                }
            }
        }
    }
});
