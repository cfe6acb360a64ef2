#!/usr/bin/env bash
# Measures jsae-bench's ci preset and gates it against ci/baseline.json.
#   ci/bench-gate.sh                    check (exit 3 on a regression)
#   ci/bench-gate.sh --update-baseline  rewrite this OpenBLAS core's baseline entry
#                                       from 3 measurements (gated shares pooled over
#                                       all 6 rounds; the rest: median); prints the diff
#   ci/bench-gate.sh --selftest         prove the gate fails a slowed and a perturbed run
#
# One measurement: ROUNDS 1-thread runs of STEPS steps with a ceiling product
# timed beside every step (--interleave-ceiling), and after the first a plain
# 2-thread run (peak memory, fingerprint, the fallback's shares); ci/gate.py
# pools the 1-thread runs' steps, each paired with the ceiling products
# timed on either side of it, into the upper quartile of their shares by CPU
# time.
# Threads are fixed (1 and 2), not the machine's core count, so that the
# baseline means the same on any machine. About 25 s on an idle 2-core
# machine, several times that under load (ci/gate-flake-proof.txt). The
# self-test takes about 3 minutes idle: its slowed runs must go through both
# confirmations.
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
    cpu_run "$dir" "$r" "$@"
    if [ "$r" = 1 ]; then full_run "$dir" "$full" "$@"; fi
  done
  if [ "$rounds" = 0 ]; then full_run "$dir" "$full" "$@"; fi
}
# cpu_run DIR N [hook args...]: one 1-thread run, written to DIR/cpu-N.json.
cpu_run() {
  local dir=$1 n=$2
  shift 2
  "$bench" --preset ci --no-profile --no-fingerprint --threads 1 --steps "$STEPS" --interleave-ceiling "$@" \
    --json "$dir/cpu-$n.json" >/dev/null 2>&1
}
full_run() {
  local dir=$1 full=$2
  shift 2
  case "$full" in
    full) "$bench" --preset ci --no-profile --threads 2 --steps 3 "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
    nofp) "$bench" --preset ci --no-profile --threads 2 --steps 3 --no-fingerprint "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
  esac
}

# gate DIR ONLY [hook args...]: gate.py check on DIR (rows in ONLY), its
# table in $out/gate.txt; returns gate.py's exit status. When only an
# efficiency share fails, the failure is confirmed before it stands: up to
# CONFIRM times, ROUNDS more 1-thread runs join the pool and the check is
# repeated. A burst of load lowers the shares of the steps it overlaps, and
# the rounds after it outweigh them in the upper quartile; a real slowdown
# stays below the band however many rounds there are (the self-test's 15%
# case goes through the same confirmation). Memory and fingerprint failures
# are not noise and are not re-measured.
CONFIRM=2
gate() {
  local dir=$1 only=$2 rc n rest extra=0
  shift 2
  while :; do
    python3 ci/gate.py check "$dir" --only "$only" > "$out/gate.txt" && rc=0 || rc=$?
    [ "$rc" -eq 3 ] && [ "$extra" -lt "$CONFIRM" ] || return "$rc"
    case ",$only," in *,efficiency,*) ;; *) return "$rc" ;; esac
    # The fallback (no entry for this core) gates the plain 2-thread run,
    # which more 1-thread rounds do not change.
    if grep -q "falling back" "$out/gate.txt"; then return "$rc"; fi
    rest=$(echo "$only" | tr , '\n' | { grep -vx efficiency || true; } | paste -sd, -)
    if [ -n "$rest" ] && ! python3 ci/gate.py check "$dir" --only "$rest" >/dev/null 2>&1; then
      return "$rc"
    fi
    extra=$((extra + 1))
    n=$(ls "$dir"/cpu-*.json 2>/dev/null | wc -l)
    echo "gate: an efficiency share is below its band after $n rounds; $ROUNDS more to tell a slowdown from load (confirmation $extra of $CONFIRM)" >&2
    for ((r = n + 1; r <= n + ROUNDS; r++)); do
      cpu_run "$dir" "$r" "$@" || { echo "gate: jsae-bench failed in a confirmation round" >&2; return 2; }
    done
  done
}

# expect_fail NAME ONLY DIR [hook args...]: the gate must exit 3 on DIR, for
# a row in ONLY, after its confirmations.
expect_fail() {
  local name=$1 only=$2 dir=$3 rc
  shift 3
  gate "$dir" "$only" "$@" && rc=0 || rc=$?
  if [ "$rc" -ne 3 ]; then
    cat "$out/gate.txt"
    echo "gate selftest: a run with $name was not failed (exit $rc)"
    exit 1
  fi
  echo "gate selftest: a run with $name is failed, as it must be:"
  grep -E "FAIL|falling back|rounds of" "$out/gate.txt" | sed 's/^/    /'
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
    expect_fail "200 ms of work added per step" efficiency "$out/slow200" --inject-delay-ms 200
    measure "$out/slow15" "$ROUNDS" none --inject-slowdown-percent 15
    core=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["environment"]["openblasCore"])' "$out/slow15/cpu-1.json")
    if python3 -c 'import json,sys; sys.exit(0 if sys.argv[2] in json.load(open(sys.argv[1])).get("cores", {}) else 1)' ci/baseline.json "$core"; then
      expect_fail "a 15% slowdown" efficiency "$out/slow15" --inject-slowdown-percent 15
      # The confirmation must also do its job: a measurement whose first
      # rounds were slowed by 30% (as load would), then confirmed with
      # unslowed rounds, passes.
      measure "$out/loaded" "$ROUNDS" none --inject-slowdown-percent 30
      gate "$out/loaded" efficiency && rc=0 || rc=$?
      if [ "$rc" -ne 0 ] || [ "$(ls "$out/loaded"/cpu-*.json | wc -l)" -le "$ROUNDS" ]; then
        cat "$out/gate.txt"
        echo "gate selftest: slowed first rounds were not confirmed away by unslowed ones (exit $rc)"
        exit 1
      fi
      echo "gate selftest: slowed first rounds, then unslowed confirmation rounds: passes, as it must:"
      grep -E "efficiency_1t|rounds of" "$out/gate.txt" | sed 's/^/    /'
    else
      echo "gate selftest: no baseline for OpenBLAS core $core, so the 15% case is not required to fail (the widest band cannot see it)"
    fi
    measure "$out/perturbed" 0 full --perturb-fingerprint 1e-3
    expect_fail "the fingerprint's lr × 1.001" fingerprint "$out/perturbed"
    ;;
  "")
    measure "$out/m" "$ROUNDS" full
    gate "$out/m" efficiency,memory,fingerprint && rc=0 || rc=$?
    cat "$out/gate.txt"
    exit "$rc"
    ;;
  *)
    echo "usage: ci/bench-gate.sh [--update-baseline | --selftest]" >&2
    exit 2
    ;;
esac
