#!/usr/bin/env bash
# Runs every test the way the README says, installing tools that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it from crates.io" >&2
  cargo install cargo-nextest --locked
fi

profile=default
if [ "${CI:-}" = "true" ]; then profile=ci; fi

cargo nextest run --workspace --profile "$profile"
