//! The scaffolding every driver of the mock needs, written once: the lifecycle tests, the
//! mock's own tests, the harness's runner and its bench.
//!
//! * [`MockRoot`]: a temporary snapshotter root, private to its owner, with the mock
//!   linked in as `<root>/bin/nydusd`, and "new builds" of it for hot-upgrade tests.
//! * [`MockProcess`]: one mock started directly (not through daemon-core), with its
//!   journal and control socket, killed and its mount detached on drop.
//! * [`invoked_as_mock`]: whether this process was started under the mock's names, for
//!   binaries that are the mock too (the harness, the lifecycle test binary).
//! * [`bin_exe!`] and [`manifest_dir!`]: a test's binaries and sources, found at run time,
//!   so an archived suite runs from another directory or machine.
//!
//! It depends on neither daemon-core nor mock-nydusd, so that both can use it.

mod process;
mod root;

pub use process::{
    MockProcess, exchange, exchange_or_closed, pids_naming, read_reply_into, read_response, reported_state, rss_kb,
    try_read_response, wait_for,
};
pub use root::{MockRoot, link_mock, private_tempdir, shell_quote, write_next_build, write_script};

use std::ffi::OsStr;
use std::path::Path;

/// Whether `argv0` names the mock: the link [`MockRoot`] makes is `nydusd`, and the mock's
/// own binary is `mock-nydusd`.
pub fn invoked_as_mock(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name().is_some_and(|n| n == "nydusd" || n == "mock-nydusd")
}

/// The path of the package's binary `name` for an integration test, found at run time:
/// nextest's `NEXTEST_BIN_EXE_<name>`, which points into an extracted archive when the
/// suite runs from one (`cargo nextest run --archive-file`), else Cargo's compile-time
/// `CARGO_BIN_EXE_<name>`, which names the target directory of the build.
#[macro_export]
macro_rules! bin_exe {
    ($name:literal) => {
        ::std::env::var_os(concat!("NEXTEST_BIN_EXE_", $name))
            .map(::std::path::PathBuf::from)
            .unwrap_or_else(|| ::std::path::PathBuf::from(env!(concat!("CARGO_BIN_EXE_", $name))))
    };
}

/// The calling package's source directory, found at run time: Cargo and nextest set
/// `CARGO_MANIFEST_DIR` for each test process (nextest to the remapped checkout under
/// `--workspace-remap`); the compile-time value is the fallback.
#[macro_export]
macro_rules! manifest_dir {
    () => {
        ::std::env::var_os("CARGO_MANIFEST_DIR")
            .map(::std::path::PathBuf::from)
            .unwrap_or_else(|| ::std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
    };
}

/// A legacy instance configuration nydusd accepts (localfs backend, no cache): the mock
/// refuses a mount whose configuration nydusd would refuse.
pub const ACCEPTED_CONFIG: &str =
    r#"{"device":{"backend":{"type":"localfs","config":{"dir":"/blobs"}}},"mode":"direct"}"#;

/// Writes the mock's stand-in for a RAFS bootstrap (an empty tree) at `path` and returns
/// the path as a mount command's `source`: the mock refuses a mount whose bootstrap nydusd
/// could not read.
pub fn write_stand_in(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::write(path, br#"{"mock_tree":{}}"#)?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mock_is_known_by_its_two_names_only() {
        assert!(invoked_as_mock(OsStr::new("/r/bin/nydusd")));
        assert!(invoked_as_mock(OsStr::new("mock-nydusd")));
        assert!(!invoked_as_mock(OsStr::new("/usr/bin/harness")));
        assert!(!invoked_as_mock(OsStr::new("nydusd-2.4")));
    }
}
