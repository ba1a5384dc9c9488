//! The header-section parser: any bytes, cut into reads of any sizes (the input's first
//! byte says how many sizes follow), through the mock's emulation of dbs-uhttp's framing.
//! Nothing panics; the parser never holds more than its buffer plus one body; a read's
//! space is never empty; a rejection never hands out requests; bodies fit the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_nydusd::framing::{BUFFER_SIZE, Framer, MAX_BODY};

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else { return };
    let (sizes, mut stream) = rest.split_at((count as usize).min(rest.len()));
    let mut framer = Framer::new();
    let mut cut = sizes.iter().cycle();
    while !stream.is_empty() {
        let space = framer.space();
        assert!(!space.is_empty() && space.len() <= BUFFER_SIZE);
        let wanted = cut.next().map_or(space.len(), |&s| usize::from(s.max(1)));
        let n = wanted.min(space.len()).min(stream.len());
        space[..n].copy_from_slice(&stream[..n]);
        stream = &stream[n..];
        let received = framer.received(n);
        if received.rejected.is_some() {
            assert!(received.requests.is_empty());
        }
        for request in &received.requests {
            assert!(request.body.as_ref().is_none_or(|b| !b.is_empty() && b.len() <= MAX_BODY));
        }
        assert!(framer.buffered() < BUFFER_SIZE + MAX_BODY);
    }
});
