#!/usr/bin/env bash
# Runs jsae-bench's ci preset and gates it against ci/baseline.json.
#   ci/bench-gate.sh                    check (exit 3 on a regression)
#   ci/bench-gate.sh --update-baseline  rewrite ci/baseline.json from this run and print the diff
#   ci/bench-gate.sh --selftest         prove the gate fails a slowed and a perturbed run
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product jsae-bench >/dev/null
bench=".build/release/jsae-bench"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

case "${1:-}" in
  --update-baseline)
    "$bench" --preset ci --no-profile --json "$out/result.json" >/dev/null
    python3 ci/gate.py update "$out/result.json"
    ;;
  --selftest)
    python3 ci/gate.py selftest
    # A real slowed run (a 200 ms sleep in every timed step) and a real
    # perturbed run (lr × 1.001 in the fingerprint run) must both fail.
    for hook in "--inject-delay-ms 200" "--perturb-fingerprint 1e-3"; do
      # shellcheck disable=SC2086
      "$bench" --preset ci --no-profile $hook --json "$out/bad.json" >/dev/null 2>&1
      set +e
      python3 ci/gate.py check "$out/bad.json" > "$out/gate.txt"
      rc=$?
      set -e
      if [ "$rc" -ne 3 ]; then
        cat "$out/gate.txt"
        echo "gate selftest: a run with '$hook' was not failed (exit $rc)"
        exit 1
      fi
      echo "gate selftest: a run with '$hook' is failed, as it must be:"
      grep FAIL "$out/gate.txt" | sed 's/^/    /'
    done
    ;;
  "")
    "$bench" --preset ci --no-profile --json "$out/result.json" >/dev/null
    python3 ci/gate.py check "$out/result.json"
    ;;
  *)
    echo "usage: ci/bench-gate.sh [--update-baseline | --selftest]" >&2
    exit 2
    ;;
esac
