#!/usr/bin/env bash
# Formatting and lints, as required before every commit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The mock's tests turn on its `internals` feature, which makes every module public; its
# library alone (what the harness links) must be free of dead code without it.
cargo clippy -p mock-nydusd --lib -- -D warnings
