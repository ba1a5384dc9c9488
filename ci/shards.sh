#!/usr/bin/env bash
# Sharded runs from one build, checked:
#   1. `--partition hash:K/N` splits the whole suite: every test (skipped ones included) is
#      in exactly one of the N partitions.
#   2. `cargo nextest archive` packs the built suite, and the archive runs, partition by
#      partition, from another directory, with this checkout (its target dir included)
#      hidden under an empty tmpfs in a mount namespace of its own, as on a machine that
#      only has the archive and the sources (`--workspace-remap`). It runs the tests that
#      find binaries and source files at run time (see testkit::bin_exe!), and each
#      partition's list must again add up to the whole.
#
#   ci/shards.sh [N]      (default 2; needs root for the mount namespace)
set -euo pipefail
cd "$(dirname "$0")/.."
shards="${1:-2}"
workspace="$PWD"
work=$(mktemp -d /tmp/harness-shards-XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM HUP

fail() { echo "shards: $*" >&2; exit 1; }

# Every test of the suite, one `binary test` per line, sorted.
listed() { cargo nextest list "$@" --run-ignored all --message-format oneline 2>/dev/null | sort; }

listed --workspace > "$work/all"
: > "$work/union"
for k in $(seq 1 "$shards"); do
  listed --workspace --partition "hash:$k/$shards" >> "$work/union"
done
sort "$work/union" -o "$work/union"
dups=$(uniq -d "$work/union" | wc -l)
[ "$dups" = 0 ] || fail "$dups tests are in more than one partition"
diff -u "$work/all" "$work/union" >/dev/null || fail "the partitions do not add up to the suite: $(diff "$work/all" "$work/union" | head -5)"
echo "shards: $(wc -l < "$work/all") tests, each in exactly one of $shards partitions"

cargo nextest archive --workspace --archive-file "$work/suite.tar.zst" >/dev/null 2>&1 || fail "cargo nextest archive failed"
mkdir "$work/src" "$work/x"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/src"

filter='binary(cli) | binary(record) | binary(architecture) | binary(format) | package(nydusd-api) | (package(mock-nydusd) & binary(behaviour))'
# Runs cargo-nextest on the archive with this checkout out of sight.
from_archive() {
  local verb="$1"
  shift
  set -- "$verb" --archive-file "$work/suite.tar.zst" --workspace-remap "$work/src" \
    --extract-to "$work/x" --extract-overwrite "$@"
  if [ "$(id -u)" = 0 ]; then
    # shellcheck disable=SC2016
    unshare --mount --propagation private -- sh -c \
      'mount -t tmpfs none "$0" && cd "$1" && shift && exec cargo-nextest nextest "$@"' "$workspace" "$work" "$@"
  else
    echo "shards: not root, so this checkout stays visible to the archived run" >&2
    (cd "$work" && cargo-nextest nextest "$@")
  fi
}

: > "$work/archived-union"
for k in $(seq 1 "$shards"); do
  from_archive list --partition "hash:$k/$shards" -E "$filter" --message-format oneline 2>"$work/list.err" \
    >> "$work/archived-union" || fail "partition $k/$shards of the archive cannot be listed: $(tail -5 "$work/list.err")"
  out="$work/run-$k.log"
  if ! from_archive run --partition "hash:$k/$shards" -E "$filter" --no-fail-fast >"$out" 2>&1; then
    tail -30 "$out" >&2
    fail "partition $k/$shards of the archived suite failed"
  fi
  echo "shards: from the archive, partition $k/$shards: $(grep -E 'Summary' "$out" | sed 's/^ *//')"
done
sort "$work/archived-union" -o "$work/archived-union"
from_archive list -E "$filter" --message-format oneline 2>/dev/null | sort > "$work/archived-all" ||
  fail "the archive cannot be listed"
[ -s "$work/archived-all" ] || fail "the archive lists no test"
diff -u "$work/archived-all" "$work/archived-union" >/dev/null || fail "the archived partitions do not add up to the archived selection"
echo "shards: the archive ran from $work/src, $(wc -l < "$work/archived-all") tests in $shards partitions, with $workspace hidden"
