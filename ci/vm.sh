#!/usr/bin/env bash
# The kernel matrix: the privileged scenarios inside a VM on each Debian kernel that
# ci/vm-kernels.sh brings (6.1 and 6.12), REPEAT times each (default 3), with reports
# and repro bundles kept in target/vm/<kernel>/results. Prints one line per kernel and
# exits non-zero when any kernel had a failure or its VM did not finish.
#
#   ci/vm.sh [REPEAT] [-- extra `harness run` arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
repeat="${1:-3}"
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" = "--" ] && shift

cargo build --release -p harness >/dev/null
kernels=$(ci/vm-kernels.sh)
status=0
summary=""
for kernel in $kernels; do
  name=$(basename "$kernel" .deb)
  out="target/vm/$name"
  started=$(date +%s)
  set +e
  target/release/harness vm --kernel "$kernel" --out "$out" --copy scenarios -- \
    run scenarios --filter privileged --repeat "$repeat" --keep-going --color never \
    --junit /results/junit.xml --json /results/report.json --bundles /results/bundles "$@"
  code=$?
  set -e
  [ "$code" = 0 ] || status=1
  counts=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%d passed, %d failed, %d skipped" % (s["passed"], s["failed"], s["skipped"]))' \
    "$out/results/report.json" 2>/dev/null || echo "no report")
  summary+="$name: $counts, exit $code, $(( $(date +%s) - started )) s wall"$'\n'
done
echo
echo "kernel matrix:"
printf '%s' "$summary"
exit "$status"
