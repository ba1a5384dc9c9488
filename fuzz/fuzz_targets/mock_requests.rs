//! Any bytes on the mock's API socket: parsed as pipelined HTTP requests and handled by
//! the nydusd model in FUSE and singleton mode; replies encode, nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_nydusd::http::{Parsed, parse};
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
        let mut rest = data;
        while !rest.is_empty() {
            match parse(rest) {
                Parsed::Request(request, used) => {
                    let reply = model.handle(mock_nydusd::routes::route(&request));
                    let _ = reply.response.encode();
                    assert!(used > 0 && used <= rest.len());
                    rest = &rest[used..];
                }
                Parsed::Incomplete | Parsed::Invalid(_) => break,
            }
        }
    }
});
