//! Any text as a scenario file: a scenario or a located error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = harness::scenario::load::parse(std::path::Path::new("fuzz.yaml"), text) {
        // Errors name the file; rendering them must not panic either.
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
