#!/usr/bin/env bash
# Formatting and lints, as required before every commit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The mock's tests turn on its `internals` feature, which makes every module public; its
# library alone (what the harness links) must be free of dead code without it.
cargo clippy -p mock-nydusd --lib -- -D warnings
# The fuzz targets are a crate of their own (outside the workspace, built by cargo-fuzz);
# checked here so that an API change that breaks them fails before CI's fuzz run does.
cargo check -q --manifest-path fuzz/Cargo.toml --bins
