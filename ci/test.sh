#!/usr/bin/env bash
# Runs every test the way the README says, installing tools that are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is missing; installing it from crates.io" >&2
  cargo install cargo-nextest --locked
fi

# Privileged tests build erofs images; they are listed as ignored (with the reason) when
# the tool is missing and this is not root, so installing is best effort.
if ! command -v mkfs.erofs >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "mkfs.erofs is missing; installing erofs-utils and fuse3 from Debian" >&2
  apt-get install -y erofs-utils fuse3 >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y erofs-utils fuse3 >/dev/null 2>&1; } ||
    echo "could not install erofs-utils; erofs image tests will be skipped" >&2
fi

profile=default
if [ "${CI:-}" = "true" ]; then profile=ci; fi

cargo nextest run --workspace --profile "$profile"
