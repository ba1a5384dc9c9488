#!/usr/bin/env bash
# The kernel matrix: the privileged and fscache scenarios inside a VM on each Debian kernel
# that ci/vm-kernels.sh brings (6.1 and 6.12), REPEAT times each (default 3), against the
# mock and against real nydusd 2.2 (`nydusd` on PATH or in ~/.cargo/bin, with nydus-image
# beside it; $NYDUSD names another) and, when $NYDUSD_2_4 names one, nydusd 2.4. Each
# kernel loads cachefiles and erofs rebuilt with on-demand fscache (ci/vm-modules.sh), so
# no fscache scenario skips; daemon-core's kernel tests (its `mounts::` tests) run there
# too. Reports and repro bundles are kept in target/vm/<kernel>/<target>/results. Prints
# one line per kernel and target, and exits non-zero when any run had a failure or its VM
# did not finish.
#
#   ci/vm.sh [REPEAT] [-- extra `harness run` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
repeat="${1:-3}"
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" = "--" ] && shift

cargo build --release -p harness >/dev/null
kernels=$(ci/vm-kernels.sh)
# daemon-core's own kernel tests (mounts::: erofs images, FUSE aborts, erofs over fscache)
# run inside each guest too, from their test binary.
lifecycle=$(cargo test --release -p daemon-core --test lifecycle --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "lifecycle":
        print(m["executable"])')

nydusd_2_2="${NYDUSD:-$(command -v nydusd || echo "${HOME:-/root}/.cargo/bin/nydusd")}"
targets="mock"
[ -x "$nydusd_2_2" ] && targets+=" real-2.2" || echo "vm: no nydusd 2.2 at $nydusd_2_2; the real target is not run" >&2
[ -n "${NYDUSD_2_4:-}" ] && [ -x "$NYDUSD_2_4" ] && targets+=" real-2.4"

status=0
summary=""
for kernel in $kernels; do
  name=$(basename "$kernel" .deb)
  started=$(date +%s)
  modules=$(ci/vm-modules.sh "$kernel")
  built=$(( $(date +%s) - started ))
  module_args=()
  for m in $modules; do module_args+=(--module "$m"); done
  for target in $targets; do
    out="target/vm/$name/$target"
    target_args=()
    binary_args=()
    case "$target" in
      real-2.2) binary="$nydusd_2_2" ;;
      real-2.4) binary="$NYDUSD_2_4" ;;
      *) binary="" ;;
    esac
    if [ -n "$binary" ]; then
      target_args=(--target real)
      binary_args=(--binary "$binary")
      image="$(dirname "$binary")/nydus-image"
      [ -x "$image" ] || image=$(command -v nydus-image || true)
      [ -n "$image" ] && binary_args+=(--binary "$image")
    fi
    run_started=$(date +%s)
    set +e
    target/release/harness vm --kernel "$kernel" "${module_args[@]}" "${binary_args[@]}" --out "$out" --copy scenarios -- \
      run scenarios -E 'path(/^(privileged|fscache)//)' "${target_args[@]}" --repeat "$repeat" --keep-going \
      --color never --junit /results/junit.xml --json /results/report.json --bundles /results/bundles "$@"
    code=$?
    set -e
    [ "$code" = 0 ] || status=1
    counts=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); s=r["summary"]; print("%d passed, %d failed, %d skipped; %s" % (s["passed"], s["failed"], s["skipped"], r.get("fscache_modules")))' \
      "$out/results/report.json" 2>/dev/null || echo "no report")
    summary+="$name $target: $counts, exit $code, $(( $(date +%s) - run_started )) s wall"$'\n'
  done
  out="target/vm/$name/daemon-core"
  mkdir -p "$out"
  run_started=$(date +%s)
  set +e
  target/release/harness vm --kernel "$kernel" "${module_args[@]}" --binary "$lifecycle" --exec "$(basename "$lifecycle")" \
    --out "$out" -- mounts:: > "$out/output.log" 2>&1
  code=$?
  set -e
  [ "$code" = 0 ] || status=1
  result=$(grep -E '^test result:' "$out/output.log" | tail -1 || echo "no result")
  summary+="$name daemon-core mounts::: $result, exit $code, $(( $(date +%s) - run_started )) s wall"$'\n'
  summary+="$name: modules ready in $built s"$'\n'
done
echo
echo "kernel matrix:"
printf '%s' "$summary"
exit "$status"
