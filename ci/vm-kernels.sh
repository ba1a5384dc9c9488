#!/usr/bin/env bash
# Downloads the Debian kernels the VM matrix boots (6.1, Debian 12's own, and 6.12 from
# bookworm's backported line) into a cache directory, once, and prints their paths, one
# per line, oldest first. Only Debian's package registry is used; nothing is installed.
#
#   ci/vm-kernels.sh [DIR]      (default: $HARNESS_VM_CACHE or /var/cache/harness-vm)
set -euo pipefail
dir="${1:-${HARNESS_VM_CACHE:-/var/cache/harness-vm}}"
mkdir -p "$dir"
cd "$dir"

# The image package each meta-package points at today.
image_of() {
  apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'
}

for meta in linux-image-cloud-amd64 linux-image-6.12-cloud-amd64; do
  # `|| true`: with stale package lists apt-cache fails, which must lead to the update
  # below, not end the script (set -e).
  image=$(image_of "$meta" || true)
  if [ -z "$image" ]; then
    apt-get update >/dev/null 2>&1 || true
    image=$(image_of "$meta" || true)
  fi
  [ -n "$image" ] || { echo "vm-kernels: Debian offers no $meta here" >&2; exit 1; }
  if ! ls "$image"_*.deb >/dev/null 2>&1; then
    # apt's sandbox user may not write here; root downloads it itself.
    apt-get download "$image" >/dev/null 2>&1 || { echo "vm-kernels: cannot download $image" >&2; exit 1; }
  fi
  ls -1 "$PWD/$image"_*.deb | tail -1
done
