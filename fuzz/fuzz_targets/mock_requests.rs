//! Any bytes on the mock's API socket, read in buffer-sized reads: framed as dbs-uhttp
//! frames them and handled by the nydusd model in FUSE and singleton mode, as 2.4 and as
//! 2.2; replies
//! encode, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_nydusd::framing::Framer;
use mock_nydusd::model::{Mode, Model, ModelOptions};

fuzz_target!(|data: &[u8]| {
    use mock_nydusd::version::NydusdVersion;
    for (mode, version) in [
        (Mode::Fuse, NydusdVersion::V2_4),
        (Mode::Singleton, NydusdVersion::V2_4),
        (Mode::Fuse, NydusdVersion::V2_2),
        (Mode::Singleton, NydusdVersion::V2_2),
    ] {
        let options = ModelOptions {
            version,
            shuffle_maps: false,
            id: Some("fuzz".into()),
            supervisor: None,
            mode,
            build: Default::default(),
            abort_like_nydusd: false,
            fscache_dir: None,
            fuse: None,
            fscache_service: None,
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
