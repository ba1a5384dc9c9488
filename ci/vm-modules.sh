#!/usr/bin/env bash
# Builds erofs over fscache in on-demand mode for a Debian kernel package: `cachefiles.ko`
# with CONFIG_CACHEFILES_ONDEMAND and `erofs.ko` with CONFIG_EROFS_FS_ONDEMAND, which no
# Debian kernel enables. Both are rebuilt out of tree from Debian's own `linux-source-*`
# of the same version, against Debian's headers for that kernel, so the stock kernel
# loads them (`harness vm --module`). Only Debian's package registry is used; nothing is
# installed. Kept by kernel version; prints the two module paths, one per line.
#
#   ci/vm-modules.sh KERNEL.deb [DIR]   (default: $HARNESS_VM_CACHE or /var/cache/harness-vm)
#
# Needs gcc, make and the tools the kernel's build uses (build-essential, bc, flex, bison,
# libelf-dev when missing are reported by make). About 35 s per kernel, the first time.
set -euo pipefail
deb="${1:?usage: ci/vm-modules.sh KERNEL.deb [DIR]}"
dir="${2:-${HARNESS_VM_CACHE:-/var/cache/harness-vm}}"
[ -f "$deb" ] || { echo "vm-modules: $deb: no such kernel package" >&2; exit 1; }

# linux-image-6.1.0-57-cloud-amd64_6.1.192-3_amd64.deb: the release and the version.
name=$(basename "$deb" .deb)
package=${name%%_*}
rest=${name#*_}
version=${rest%_*}
release=${package#linux-image-}
case "$package/$version" in
  linux-image-[0-9]*/[0-9]*) ;;
  *) echo "vm-modules: $deb is not named like a Debian kernel image package (linux-image-RELEASE_VERSION_ARCH.deb)" >&2; exit 1 ;;
esac
series=$(echo "$release" | cut -d. -f1,2)
out="$dir/modules/$release-$version"
if [ -s "$out/cachefiles.ko" ] && [ -s "$out/erofs.ko" ]; then
  echo "$out/cachefiles.ko"
  echo "$out/erofs.ko"
  exit 0
fi

mkdir -p "$dir/modules"
# One build at a time per cache: a second caller waits, then finds the first one's result.
exec 9>"$dir/modules/.lock"
flock 9
if [ -s "$out/cachefiles.ko" ] && [ -s "$out/erofs.ko" ]; then
  echo "$out/cachefiles.ko"
  echo "$out/erofs.ko"
  exit 0
fi
# A build that dies half-way leaves a scratch directory, never a half-filled $out; one a
# SIGKILL left is removed here (the lock says no build of this cache is running).
rm -rf "$dir/modules"/.build-*
work=$(mktemp -d "$dir/modules/.build-$release-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
started=$(date +%s)

depends_of() {
  apt-cache depends "$1" 2>/dev/null | awk -v want="$2" '/Depends:/ && $2 ~ want { print $2; exit }' || true
}
headers="linux-headers-$release"
common=$(depends_of "$headers" '^linux-headers-.*-common')
kbuild=$(depends_of "$headers" '^linux-kbuild-')
if [ -z "$common" ] || [ -z "$kbuild" ]; then
  apt-get update >/dev/null 2>&1 || true
  common=$(depends_of "$headers" '^linux-headers-.*-common')
  kbuild=$(depends_of "$headers" '^linux-kbuild-')
fi
[ -n "$common" ] && [ -n "$kbuild" ] || { echo "vm-modules: Debian offers no $headers here" >&2; exit 1; }
for p in "$headers" "$common" "$kbuild" "linux-source-$series"; do
  apt-get download "$p=$version" >/dev/null 2>&1 ||
    { echo "vm-modules: cannot download $p at $version (the kernel's own version)" >&2; exit 1; }
done
mkdir root
for p in linux-headers-*.deb linux-kbuild-*.deb; do dpkg-deb -x "$p" root; done
# Only the two directories of the source are needed (the tarball is 140 MB).
dpkg-deb --fsys-tarfile linux-source-"$series"_*.deb |
  tar -x -O "./usr/src/linux-source-$series.tar.xz" |
  tar -xJ "linux-source-$series/fs/cachefiles" "linux-source-$series/fs/erofs"
tree="$PWD/root/usr/src/$headers"
# The headers' Makefile includes the common part by its installed, absolute path.
sed -i "s|^include /usr/src/|include $PWD/root/usr/src/|" "$tree/Makefile"

build() { # directory, then the options it reads
  local src="$PWD/linux-source-$series/fs/$1"
  shift
  local defines=""
  for option in "$@"; do
    [ "${option#*=}" = y ] && defines+=" -D${option%=*}=1"
  done
  make -s -C "$tree" M="$src" "$@" KCFLAGS="$defines" CONFIG_DEBUG_INFO_BTF_MODULES= \
    -j"$(nproc)" modules >build.log 2>&1 ||
    { echo "vm-modules: building fs/${src##*/fs/} failed:" >&2; tail -20 build.log >&2; exit 1; }
}
build cachefiles CONFIG_CACHEFILES=m CONFIG_CACHEFILES_ONDEMAND=y
build erofs CONFIG_EROFS_FS=m CONFIG_EROFS_FS_ONDEMAND=y
mkdir built
for m in cachefiles erofs; do
  strip --strip-debug -o "built/$m.ko" "linux-source-$series/fs/$m/$m.ko"
done
rm -rf "$out"
mv built "$out"
echo "vm-modules: built cachefiles.ko and erofs.ko for $release in $(( $(date +%s) - started )) s" >&2
echo "$out/cachefiles.ko"
echo "$out/erofs.ko"
