#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 20: the short CI run; `just fuzz`
# runs longer), after replaying the committed regressions (fuzz/regressions/<target>/).
# A crash fails the script and leaves its input in fuzz/artifacts/<target>/: copy it into
# fuzz/regressions/<target>/ with the fix, so every later run replays it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-20}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing; installing it from crates.io" >&2
  cargo install cargo-fuzz --locked
fi
# cargo-fuzz passes nightly-only flags; RUSTC_BOOTSTRAP lets the machine's one stable
# toolchain accept them. No sanitizer: its runtime ships with nightly only, and the code
# under test is safe Rust, where libFuzzer still finds panics, overflows and hangs.
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)

# Seeds: every scenario file, and a few API requests as daemon-core sends them.
mkdir -p corpus/scenario_parser corpus/mock_requests corpus/client_replies corpus/framing corpus/control_requests
for f in ../scenarios/*/*.yaml; do
  cp "$f" "corpus/scenario_parser/$(basename "$(dirname "$f")")-$(basename "$f")"
done
printf 'GET /api/v1/daemon HTTP/1.1\r\nHost: localhost\r\n\r\n' >corpus/mock_requests/get-daemon
printf 'POST /api/v1/mount?mountpoint=/a HTTP/1.1\r\nContent-Length: 45\r\n\r\n{"source":"/b","fs_type":"rafs","config":"{}"}' >corpus/mock_requests/mount
printf 'PUT /api/v1/daemon/start HTTP/1.1\r\nContent-Length: 0\r\n\r\nPUT /api/v1/daemon/exit HTTP/1.1\r\n\r\n' >corpus/mock_requests/start-exit
# framing: a count of read sizes, the sizes, then the bytes.
printf '\003\005\001\200GET /api/v1/daemon HTTP/1.1\r\nX-Long: aaaaaaaa\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}' >corpus/framing/pieces
cp corpus/mock_requests/* corpus/framing/
printf 'PUT /script HTTP/1.1\r\nContent-Length: 60\r\n\r\nrules:\n  - when: { path: /api/v1/daemon }\n    then: [reply]\n' >corpus/control_requests/put-script
printf 'GET /journal HTTP/1.1\r\n\r\nGET /state HTTP/1.1\r\n\r\nDELETE /script HTTP/1.1\r\n\r\n' >corpus/control_requests/reads

"${fuzz[@]}" build -s none
for target in $("${fuzz[@]}" list); do
  if compgen -G "regressions/$target/*" >/dev/null; then
    echo "== $target: replaying regressions" >&2
    "${fuzz[@]}" run -s none "$target" regressions/"$target"/* -- -runs=0
  fi
  echo "== $target: fuzzing for ${seconds}s" >&2
  "${fuzz[@]}" run -s none "$target" "corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|panicked|ERROR|SUMMARY|crash-' || true
  # grep hides libFuzzer's progress lines; the run's own status decides.
  test "${PIPESTATUS[0]}" -eq 0
done
