#!/usr/bin/env bash
# Checks what the harness writes and reads with tools that share no code with it: every
# JUnit report against Jenkins' JUnit schema (ci/schemas/junit-10.xsd) with xmllint
# (libxml2), every JSON report against the published docs/report.schema.json, and every
# library scenario against scenarios/schema.json, with check-jsonschema (Python, its own
# YAML parser); and yaml-language-server (the YAML support of VS Code and Neovim), driven
# over its protocol by ci/editor/completion.mjs, must offer each step keyword once (and
# nothing else) at `- `, every action in a rule's `then:`, and describe steps and fields
# on hover; and `harness explain --mermaid` of every library scenario
# and of a hostile fixture must parse with Mermaid's own parser (ci/editor/mermaid.mjs). The reports come from the scenario library, a hostile name, a run
# stopped by its first failure, a repeated run, a flaky run and a run whose retries all
# fail. Installs the tools when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v xmllint >/dev/null 2>&1; then
  echo "xmllint is missing; installing libxml2-utils from Debian" >&2
  apt-get install -y libxml2-utils >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y libxml2-utils >/dev/null 2>&1; }
fi
venv=target/ci-tools
if [ ! -x "$venv/bin/check-jsonschema" ] || ! "$venv/bin/python" -c 'import junitparser' 2>/dev/null; then
  echo "check-jsonschema or junitparser is missing; installing them from PyPI into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'check-jsonschema==0.29.*' 'junitparser==3.*'
fi

node_tools=target/ci-tools/node
if [ ! -x "$node_tools/node_modules/.bin/yaml-language-server" ] || [ ! -d "$node_tools/node_modules/mermaid" ]; then
  echo "yaml-language-server or mermaid is missing; installing them from npm into $node_tools" >&2
  mkdir -p "$node_tools"
  npm install --prefix "$node_tools" --silent --no-audit --no-fund 'yaml-language-server@1' 'mermaid@11' >/dev/null
fi

cargo build -q -p harness
harness=target/debug/harness
out=$(mktemp -d /tmp/harness-reports.XXXXXX)
trap 'rm -rf "$out"' EXIT

# Each run's exit code is what it must be: the reports are checked, not the verdicts.
expect() {
  local want=$1 name=$2
  shift 2
  local code=0
  "$harness" run "$@" --bundles "$out/bundles" --junit "$out/$name.xml" --json "$out/$name.json" >"$out/$name.log" 2>&1 || code=$?
  if [ "$code" != "$want" ]; then
    echo "harness run $* exited $code, expected $want:" >&2
    cat "$out/$name.log" >&2
    exit 1
  fi
}
# The library in two shards with the CI profile (.config/harness.toml): the shards'
# reports together hold each library scenario exactly once.
expect 0 library-1 scenarios --profile ci --partition hash:1/2
expect 0 library-2 scenarios --profile ci --partition hash:2/2
python3 - "$out/library-1.json" "$out/library-2.json" <<'UNION'
import json, subprocess, sys
shards = [s["path"] for f in sys.argv[1:] for s in json.load(open(f))["scenarios"]]
listed = [json.loads(l)["path"] for l in subprocess.run(["target/debug/harness", "list", "scenarios", "--json"],
          capture_output=True, text=True, check=True).stdout.splitlines() if l.startswith("{")]
assert sorted(shards) == sorted(listed), f"the shards hold {len(shards)} scenarios, the library {len(listed)}"
print(f"partitions: 2 shards hold the library's {len(listed)} scenarios once each")
UNION
expect 1 hostile harness/tests/fixtures/hostile-names.yaml scenarios/lifecycle/start-running.yaml --keep-going
expect 1 fail-fast harness/tests/fixtures/wrong-state.yaml scenarios/lifecycle/destroy.yaml --jobs 1
expect 0 repeated scenarios/lifecycle/start-running.yaml --repeat 3
# A flaky scenario (its first start fails, made certain by a wrapper around the mock) and
# one that fails every attempt: `flakyFailure` and `rerunFailure` in JUnit, attempts in JSON.
ln -s "$PWD/$harness" "$out/nydusd"
cat >"$out/flaky-nydusd" <<WRAPPER
#!/bin/sh
case " \$* " in *" --apisock "*) mkdir "$out/failed-once" 2>/dev/null && exit 1 ;; esac
exec "$out/nydusd" "\$@"
WRAPPER
chmod +x "$out/flaky-nydusd"
expect 0 flaky harness/tests/fixtures/flaky-start.yaml --nydusd "$out/flaky-nydusd" --retries 2
grep -q '<flakyFailure' "$out/flaky.xml" || { echo "the flaky run's JUnit has no flakyFailure" >&2; exit 1; }
expect 1 reruns harness/tests/fixtures/wrong-state.yaml --retries 1

# The reports the test suite wrote, when ci/test.sh ran it first.
copies=${HARNESS_REPORT_COPIES:-}
if [ -n "$copies" ] && [ -d "$copies" ]; then
  cp "$copies"/*.xml "$copies"/*.json "$out"/ 2>/dev/null || true
fi
# Jenkins' schema has no rerun elements: reports with them are checked against it plus
# Surefire's (ci/schemas/junit-10-reruns.xsd), the others against Jenkins' alone.
for xml in "$out"/*.xml; do
  if grep -qE '<(flaky|rerun)(Failure|Error)' "$xml"; then
    xmllint --noout --schema ci/schemas/junit-10-reruns.xsd "$xml"
  else
    xmllint --noout --schema ci/schemas/junit-10.xsd "$xml"
  fi
done
"$venv/bin/check-jsonschema" --schemafile docs/report.schema.json "$out"/*.json
# An independent JUnit consumer (junitparser, Python) reads the failing run's report as a
# CI server would: the failure's message says what was expected and observed, the case
# names its file and line, and system-out holds the whole timeline.
"$venv/bin/python" - "$out/fail-fast.xml" <<'JUNIT'
import sys
from junitparser import JUnitXml, Failure
cases = [case for suite in JUnitXml.fromfile(sys.argv[1]) for case in suite]
failed = [case for case in cases if any(isinstance(r, Failure) for r in case.result)]
assert len(failed) == 1, f"{len(failed)} failed cases"
case = failed[0]
failure = next(r for r in case.result if isinstance(r, Failure))
assert "; expected: READY; observed: RUNNING" in failure.message, failure.message
assert case._elem.get("file") == "harness/tests/fixtures/wrong-state.yaml", case._elem.attrib
assert case._elem.get("line") == "13", case._elem.attrib
assert case.classname == "harness/tests/fixtures/wrong-state", case.classname
assert "step 1 `start` (line 11)" in case.system_out and "step 3 failed" in case.system_out, case.system_out
print(f"junitparser: {case.name} fails with {failure.message!r}")
JUNIT
mapfile -t scenario_files < <(find scenarios -name '*.yaml' -not -path 'scenarios/invalid/*' | sort)
"$venv/bin/check-jsonschema" --schemafile scenarios/schema.json "${scenario_files[@]}"
steps=$(mktemp /tmp/harness-steps.XXXXXX)
trap 'rm -rf "$out" "$steps"' EXIT
python3 -c 'import json, sys; print("\n".join(b["title"] for b in json.load(open(sys.argv[1]))["definitions"]["Step"]["oneOf"]))' scenarios/schema.json >"$steps"
node ci/editor/completion.mjs "$node_tools/node_modules/yaml-language-server/bin/yaml-language-server" scenarios/schema.json "$steps"
mkdir -p "$out/diagrams"
for file in "${scenario_files[@]}" harness/tests/fixtures/hostile-diagram.yaml; do
  "$harness" explain --mermaid "$file" >"$out/diagrams/$(echo "$file" | tr / _).mmd"
done
node ci/editor/mermaid.mjs "$node_tools/node_modules/mermaid" "$out/diagrams"/*.mmd
echo "conformance: $(ls "$out"/*.xml | wc -l) JUnit and $(ls "$out"/*.json | wc -l) JSON reports and ${#scenario_files[@]} scenarios match their schemas"
