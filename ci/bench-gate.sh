#!/usr/bin/env bash
# Measures jsae-bench's ci preset and gates it against ci/baseline.json.
#   ci/bench-gate.sh                    check (exit 3 on a regression)
#   ci/bench-gate.sh --update-baseline  rewrite this OpenBLAS core's baseline entry
#                                       from 3 measurements (median) and print the diff
#   ci/bench-gate.sh --selftest         prove the gate fails a slowed and a perturbed run
#
# One measurement: ROUNDS 1-thread runs of STEPS steps with a ceiling product
# timed beside every step (--interleave-ceiling), and after the first a plain
# 2-thread run (peak memory, fingerprint, the fallback's shares); ci/gate.py
# pools the 1-thread runs into best-of-N shares of the ceiling by CPU time.
# Threads are fixed (1 and 2), not the machine's core count, so that the
# baseline means the same on any machine. About 40 s on an idle 2-core
# machine, 75-90 s under a training run (ci/gate-flake-proof.txt).
# The self-test takes about as long as two measurements.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product jsae-bench >/dev/null
bench=".build/release/jsae-bench"
ROUNDS=2
STEPS=4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# measure DIR ROUNDS FULL [hook args...]: FULL is "full", "nofp" (no
# fingerprint) or "none".
measure() {
  local dir=$1 rounds=$2 full=$3
  shift 3
  mkdir -p "$dir"
  for ((r = 1; r <= rounds; r++)); do
    "$bench" --preset ci --no-profile --no-fingerprint --threads 1 --steps "$STEPS" --interleave-ceiling "$@" \
      --json "$dir/cpu-$r.json" >/dev/null 2>&1
    if [ "$r" = 1 ]; then full_run "$dir" "$full" "$@"; fi
  done
  if [ "$rounds" = 0 ]; then full_run "$dir" "$full" "$@"; fi
}
full_run() {
  local dir=$1 full=$2
  shift 2
  case "$full" in
    full) "$bench" --preset ci --no-profile --threads 2 --steps 3 "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
    nofp) "$bench" --preset ci --no-profile --threads 2 --steps 3 --no-fingerprint "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
  esac
}

# expect_fail NAME ONLY DIR: the gate must exit 3 on DIR, for a row in ONLY.
expect_fail() {
  local name=$1 only=$2 dir=$3 rc
  set +e
  python3 ci/gate.py check "$dir" --only "$only" > "$out/gate.txt"
  rc=$?
  set -e
  if [ "$rc" -ne 3 ]; then
    cat "$out/gate.txt"
    echo "gate selftest: a run with $name was not failed (exit $rc)"
    exit 1
  fi
  echo "gate selftest: a run with $name is failed, as it must be:"
  grep -E "FAIL|falling back" "$out/gate.txt" | sed 's/^/    /'
}

case "${1:-}" in
  --update-baseline)
    for i in 1 2 3; do measure "$out/m$i" "$ROUNDS" full; done
    python3 ci/gate.py update "$out/m1" "$out/m2" "$out/m3"
    ;;
  --selftest)
    python3 ci/gate.py selftest
    # Real slowed runs (busy work added inside every timed step) must fail
    # the efficiency rows, and a real perturbed run (lr × 1.001 in the
    # fingerprint run) the fingerprint row.
    measure "$out/slow200" 1 nofp --inject-delay-ms 200
    expect_fail "200 ms of work added per step" efficiency "$out/slow200"
    measure "$out/slow15" "$ROUNDS" none --inject-slowdown-percent 15
    core=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["environment"]["openblasCore"])' "$out/slow15/cpu-1.json")
    if python3 -c 'import json,sys; sys.exit(0 if sys.argv[2] in json.load(open(sys.argv[1])).get("cores", {}) else 1)' ci/baseline.json "$core"; then
      expect_fail "a 15% slowdown" efficiency "$out/slow15"
    else
      echo "gate selftest: no baseline for OpenBLAS core $core, so the 15% case is not required to fail (the widest band cannot see it)"
    fi
    measure "$out/perturbed" 0 full --perturb-fingerprint 1e-3
    expect_fail "the fingerprint's lr × 1.001" fingerprint "$out/perturbed"
    ;;
  "")
    measure "$out/m" "$ROUNDS" full
    python3 ci/gate.py check "$out/m"
    ;;
  *)
    echo "usage: ci/bench-gate.sh [--update-baseline | --selftest]" >&2
    exit 2
    ;;
esac
