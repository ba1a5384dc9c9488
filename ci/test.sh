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

# A real nydusd for the `real::` tests (scenarios against nydusd 2.2 and the differential
# run). Building it takes 13-30 minutes on 2 cores, so it is installed into ~/.cargo/bin
# once and kept there; NYDUS_INSTALL=0 skips it (the `real::` tests then list as skipped,
# with the reason). Best effort: a failed install only costs those tests.
have_nydusd() {
  [ -n "${NYDUSD:-}" ] || command -v nydusd >/dev/null 2>&1 || [ -x "${HOME:-/root}/.cargo/bin/nydusd" ]
}
if ! have_nydusd && [ "${NYDUS_INSTALL:-1}" != 0 ]; then
  echo "nydusd is missing; installing nydus-rs 2.2 from crates.io (takes a while, once)" >&2
  if ! command -v cmake >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y cmake >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y cmake >/dev/null 2>&1; } || true
  fi
  started=$(date +%s)
  if cargo install nydus-rs --locked >/tmp/nydus-rs-install.log 2>&1; then
    echo "nydus-rs installed in $(( $(date +%s) - started )) s" >&2
  else
    echo "could not install nydus-rs (see /tmp/nydus-rs-install.log); real-nydusd tests will be skipped" >&2
    tail -5 /tmp/nydus-rs-install.log >&2 || true
  fi
fi

# The VM tests (harness/tests/vm.rs) boot Debian's 6.1 kernel under qemu: a smoke run of
# one FUSE scenario and the runner's clean-up. Best effort, like the above: without qemu,
# busybox or the kernel they list as skipped, with the reason.
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; }
}
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v busybox >/dev/null 2>&1; then
  echo "qemu or busybox is missing; installing qemu-system-x86 and busybox-static from Debian" >&2
  apt_install qemu-system-x86 busybox-static || echo "could not install them; VM tests will be skipped" >&2
fi
if [ -z "${HARNESS_VM_KERNEL:-}" ] && kernels=$(ci/vm-kernels.sh 2>/dev/null); then
  HARNESS_VM_KERNEL=$(echo "$kernels" | head -1)
  export HARNESS_VM_KERNEL
fi
# erofs over fscache for real in that VM: cachefiles and erofs rebuilt with on-demand mode
# from Debian's sources of the same kernel (about 30 s, once; kept by kernel version).
# Best effort too: without them the fscache VM tests list as skipped, with the reason.
if [ -n "${HARNESS_VM_KERNEL:-}" ] && [ -z "${HARNESS_VM_MODULES:-}" ]; then
  if ! command -v make >/dev/null 2>&1 || ! command -v gcc >/dev/null 2>&1; then
    apt_install build-essential || true
  fi
  if modules=$(ci/vm-modules.sh "$HARNESS_VM_KERNEL"); then
    HARNESS_VM_MODULES=$(echo "$modules" | paste -sd: -)
    export HARNESS_VM_MODULES
  else
    echo "could not build the on-demand fscache modules; the fscache VM tests will be skipped" >&2
  fi
fi

profile=default
if [ "${CI:-}" = "true" ]; then profile=ci; fi

# Every report the tests write is kept here for ci/conformance.sh to check.
export HARNESS_REPORT_COPIES="$PWD/target/report-copies"
rm -rf "$HARNESS_REPORT_COPIES"
cargo nextest run --workspace --profile "$profile"

# Sharded runs: the partitions cover the suite exactly, and an archive of this build runs
# from another directory with this checkout hidden (about 30 s).
ci/shards.sh 2

# The reports and scenario files, checked by tools that share no code with the harness.
ci/conformance.sh

# The short fuzz run: every target for 20 s, after replaying its regressions.
ci/fuzz.sh 20
