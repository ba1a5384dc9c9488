//! The binary under test, for every integration test of the mock.

/// The mock binary built for these tests (found at run time: see `testkit::bin_exe!`).
pub fn mock() -> &'static std::path::Path {
    static MOCK: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    MOCK.get_or_init(|| testkit::bin_exe!("mock-nydusd"))
}
