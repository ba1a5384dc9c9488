//! The binary under test, for every integration test of the mock.

/// The mock binary cargo built for these tests.
pub fn mock() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_mock-nydusd"))
}
