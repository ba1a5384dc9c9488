//! Daemon ids in the shape of github.com/rs/xid, which the Go snapshotter uses: 12 bytes
//! (seconds, machine, pid, counter) as 20 lowercase base32hex characters. Ids sort by
//! creation time and embed into socket paths, so the shape is kept for path-length budgets.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Generates a fresh, process-unique 20-character id.
pub fn new_id() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as u32;
    let machine = machine_bytes();
    let pid = std::process::id() as u16;
    // The counter starts at a per-process value so that two processes started within the
    // same second with recycled pids still differ.
    let seed = (std::process::id().wrapping_mul(2_654_435_761)) ^ nanos();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_add(seed);
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&secs.to_be_bytes());
    raw[4..7].copy_from_slice(&machine);
    raw[7..9].copy_from_slice(&pid.to_be_bytes());
    raw[9..12].copy_from_slice(&count.to_be_bytes()[1..]);
    encode(&raw)
}

fn nanos() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

fn machine_bytes() -> [u8; 3] {
    let source = std::fs::read_to_string("/etc/machine-id")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap_or_default();
    // FNV-1a: stable across runs, no dependency for three bytes of entropy.
    let hash = source.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let b = hash.to_be_bytes();
    [b[0], b[1], b[2]]
}

fn encode(raw: &[u8; 12]) -> String {
    let mut bits: u128 = 0;
    for b in raw {
        bits = bits << 8 | u128::from(*b);
    }
    // 96 bits in 20 characters of 5 bits: pad with 4 zero bits at the end, as xid does.
    bits <<= 4;
    (0..20).rev().map(|i| ALPHABET[((bits >> (i * 5)) & 0x1f) as usize] as char).collect()
}

/// Whether `id` is safe to embed in a path: non-empty, at most 64 bytes, and only
/// `[A-Za-z0-9_.-]` without being `.` or `..`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_xid_shape_and_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 20);
            assert!(id.bytes().all(|b| ALPHABET.contains(&b)), "{id}");
            assert!(is_valid_id(id));
        }
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_invalid() {
        for bad in ["", ".", "..", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }
}
