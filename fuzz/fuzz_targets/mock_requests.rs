//! Any bytes on the mock's API socket, read in buffer-sized reads: framed as dbs-uhttp
//! frames them and handled by the nydusd model in FUSE and singleton mode; replies
//! encode, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_nydusd::framing::Framer;
use mock_nydusd::model::{Mode, Model, ModelOptions};

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Fuse, Mode::Singleton] {
        let options = ModelOptions {
            id: Some("fuzz".into()),
            supervisor: None,
            mode,
            build: Default::default(),
            abort_like_nydusd: false,
            fscache_dir: None,
            fuse: None,
        };
        let mut model = Model::new(options, "info".into());
        for received in Framer::new().feed(data) {
            for request in received.requests {
                let reply = model.handle(mock_nydusd::routes::route(&request));
                let _ = reply.response.encode();
            }
        }
    }
});
