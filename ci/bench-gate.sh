#!/usr/bin/env bash
# Measures jsae-bench's ci preset and gates it.
#   ci/bench-gate.sh                    check (exit 3 on a regression, 2 on unusable input)
#   ci/bench-gate.sh --update-baseline  rewrite this OpenBLAS core's baseline entry
#                                       from 3 measurements, and make HEAD the
#                                       reference commit; prints the diff
#   ci/bench-gate.sh --selftest         prove the gate fails a slowed and a perturbed run
#
# Efficiency is gated A/B: jsae-bench built from ci/baseline.json's reference
# commit (once per clone, in .build/gate-reference/) and the current build run
# in pairs, back to back, alternating which goes first, each run 1 thread with
# a ceiling product timed beside every step (--interleave-ceiling). The two
# runs of a pair share the machine's state, so their ratio holds still where
# a share recorded on another day drifts by +-7% (ci/gate-flake-proof.txt).
# ci/gate.py ab decides once the median ratio's interval clears the 5% floor
# or lies below it; between 4 and 12 pairs of runs of 6 JSAE and 24 SAE
# steps (about 1 to 7 minutes idle).
# Memory and the numerical fingerprint come from one plain 2-thread run,
# against ci/baseline.json. Without the reference commit (a shallow clone) or
# when it does not build, the gate says so and falls back to the recorded
# shares: 1-thread rounds pooled into an upper quartile against the core's
# entry, a failure confirmed by more rounds before it stands.
# Threads are fixed (1 and 2), not the machine's core count, so that the
# figures mean the same on any machine.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product jsae-bench >/dev/null
bench=".build/release/jsae-bench"
# Both builds of a pair run the OpenBLAS kernels the current build runs: a
# reference build that does not start itself again on the right core
# (BLASCore) would otherwise time other kernels than the current one.
if [ -z "${OPENBLAS_CORETYPE+set}" ]; then
  OPENBLAS_CORETYPE=$("$bench" --print-openblas-core) && [ -n "$OPENBLAS_CORETYPE" ] || {
    echo "gate: jsae-bench --print-openblas-core failed" >&2; exit 2; }
  export OPENBLAS_CORETYPE
fi
ROUNDS=2
STEPS=4
# A/B runs time 6 steps of the JSAE pair and 24 of the single SAE. Load
# comes in bursts of a few steps; the SAE's steps (75-200 ms at the ci
# preset, by core) are short enough that one burst covers half of 6 and
# moves their median: over 6 runs of one build on an AVX-512 Xeon, the
# ratios of neighbouring runs' 6-step SAE medians ranged 0.924-1.128, of
# their 24-step medians 0.994-1.015.
AB_STEPS=6
AB_SAE_STEPS=24
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
  one_run "$bench" "$dir/cpu-$n.json" "$STEPS" "$STEPS" "$@"
}
full_run() {
  local dir=$1 full=$2
  shift 2
  case "$full" in
    full) "$bench" --preset ci --no-profile --threads 2 --steps 3 "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
    nofp) "$bench" --preset ci --no-profile --threads 2 --steps 3 --no-fingerprint "$@" --json "$dir/full.json" >/dev/null 2>&1 ;;
  esac
}

# reference_binary: prints the path of jsae-bench built from the reference
# commit, building it first if this clone has not; returns 1, after one line
# on stderr saying why, when there is none to be had.
reference_binary() {
  local sha dir
  sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("reference", {}).get("commit", ""))' ci/baseline.json) || return 1
  if ! [[ $sha =~ ^[0-9a-f]{40}$ ]]; then
    echo "gate: ci/baseline.json names no reference commit (reference.commit: '$sha')" >&2
    return 1
  fi
  if ! git cat-file -e "$sha^{commit}" 2>/dev/null; then
    echo "gate: the reference commit ${sha:0:12} is not in this clone (shallow?)" >&2
    return 1
  fi
  dir="$PWD/.build/gate-reference/$sha"
  mkdir -p "$dir"
  (
    # One build per clone, whatever runs at once: the lock covers the check
    # and the build, and the stamp is written only after a build succeeded.
    flock 9
    [ -f "$dir/built" ] && exit 0
    echo "gate: building jsae-bench at the reference commit ${sha:0:12} (once per clone)" >&2
    rm -rf "$dir/src" && mkdir -p "$dir/src" && git archive "$sha" | tar -x -C "$dir/src" || {
      echo "gate: cannot extract the reference commit ${sha:0:12} into $dir/src" >&2; exit 1; }
    (cd "$dir/src" && swift build -c release --product jsae-bench --scratch-path "$dir/build") >"$dir/build.log" 2>&1 || {
      echo "gate: the reference commit ${sha:0:12} does not build here (see ${dir#$PWD/}/build.log)" >&2; exit 1; }
    touch "$dir/built"
  ) 9>"$dir/lock" || return 1
  echo "$dir/build/release/jsae-bench"
}

# one_run BIN FILE STEPS SAE_STEPS [hook args...]: one 1-thread run of BIN
# (STEPS of the JSAE pair, SAE_STEPS of the single SAE) with a ceiling
# product beside every step, into FILE.
one_run() {
  local bin=$1 file=$2 steps=$3 sae=$4
  shift 4
  "$bin" --preset ci --no-profile --no-fingerprint --threads 1 --steps "$steps" --sae-steps "$sae" --interleave-ceiling "$@" \
    --json "$file" >/dev/null 2>"$file.log" || {
      echo "gate: jsae-bench ($bin) failed: $(tail -n 1 "$file.log")" >&2; return 2; }
}

# ab_measure DIR REF CUR LABEL [hook args for CUR...]: pairs of runs of the
# builds REF and CUR into DIR until ci/gate.py ab decides; its table in
# $out/gate.txt; returns its exit status (0, 3, or 2).
ab_measure() {
  local dir=$1 ref=$2 cur=$3 label=$4 rc p limits
  shift 4
  limits=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])).get("reference", {}); print(r.get("min_pairs", 4), r.get("max_pairs", 12))' ci/baseline.json)
  local min=${limits% *} max=${limits#* }
  mkdir -p "$dir"
  for ((p = 1; p <= max; p++)); do
    if ((p % 2)); then
      one_run "$ref" "$dir/ref-$p.json" "$AB_STEPS" "$AB_SAE_STEPS" && one_run "$cur" "$dir/cur-$p.json" "$AB_STEPS" "$AB_SAE_STEPS" "$@" || return 2
    else
      one_run "$cur" "$dir/cur-$p.json" "$AB_STEPS" "$AB_SAE_STEPS" "$@" && one_run "$ref" "$dir/ref-$p.json" "$AB_STEPS" "$AB_SAE_STEPS" || return 2
    fi
    ((p >= min)) || continue
    python3 ci/gate.py ab "$dir" --label "$label" > "$out/gate.txt" && rc=0 || rc=$?
    [ "$rc" -eq 4 ] || return "$rc"
    echo "gate: after $p pairs the interval spans the floor; one more pair" >&2
  done
  return 2
}

# gate DIR ONLY [hook args...]: gate.py check on DIR (rows in ONLY), its
# table in $out/gate.txt; returns gate.py's exit status. When only an
# efficiency share fails, the failure is confirmed before it stands: up to
# CONFIRM times, ROUNDS more 1-thread runs join the pool and the check is
# repeated. A burst of load lowers the shares of the steps it overlaps, and
# the rounds after it outweigh them in the upper quartile; a real slowdown
# stays below the band however many rounds there are. Memory and fingerprint failures
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

# memory_fingerprint DIR: one plain 2-thread run gated for memory and the
# fingerprint against ci/baseline.json; its table in $out/gate2.txt.
memory_fingerprint() {
  measure "$1" 0 full
  python3 ci/gate.py check "$1" --only memory,fingerprint > "$out/gate2.txt"
}

# load_note LOAD0: the load average at the start and now. On a machine with
# more runnable processes than cores, every step is preempted many times and
# pair ratios spread several times wider (measured: +-3% idle, up to +-8%
# at a load of 8 on 2 cores), so a verdict there can be noise; the line says
# so beside the table instead of hiding it.
load_note() {
  local now cores
  now=$(cut -d' ' -f1 /proc/loadavg)
  cores=$(nproc)
  echo "gate: load average $1 at the start, $now at the end, on $cores cores"
  if python3 -c 'import sys; sys.exit(0 if max(float(sys.argv[1]), float(sys.argv[2])) > int(sys.argv[3]) + 0.5 else 1)' "$1" "$now" "$cores"; then
    echo "gate: the machine was oversubscribed during the measurement; pair ratios are noisier there and a verdict near the floor may not repeat"
  fi
}

# worst RC...: the exit status that matters most: 2 (unusable) over 3 over 0.
worst() {
  local w=0 rc
  for rc in "$@"; do
    if [ "$rc" -eq 2 ] || { [ "$rc" -ne 0 ] && [ "$w" -ne 2 ]; }; then w=$rc; fi
  done
  echo "$w"
}

case "${1:-}" in
  --update-baseline)
    for i in 1 2 3; do measure "$out/m$i" "$ROUNDS" full; done
    git diff --quiet HEAD -- Sources Benchmarks Package.swift ||
      echo "gate: warning: Sources, Benchmarks or Package.swift differ from HEAD; HEAD becomes the reference commit all the same" >&2
    python3 ci/gate.py update "$out/m1" "$out/m2" "$out/m3" --reference "$(git rev-parse HEAD)"
    ;;
  --selftest)
    [ -n "${GATE_ONLY_SLOWED:-}" ] || python3 ci/gate.py selftest
    # A real slowed run (10% more CPU work inside every timed step) against
    # the same build unslowed must fail the A/B gate, and a real perturbed
    # run (lr x 1.001 in the fingerprint run) the fingerprint row.
    expect_ab_fail() {
      local rc
      ab_measure "$out/slow10" "$bench" "$bench" "the same build without the slowdown" --inject-slowdown-percent 10 && rc=0 || rc=$?
      if [ "$rc" -ne 3 ]; then
        cat "$out/gate.txt"
        echo "gate selftest: a run with a 10% slowdown was not failed (exit $rc)"
        exit 1
      fi
      echo "gate selftest: a run with a 10% slowdown is failed, as it must be:"
      sed 's/^/    /' "$out/gate.txt"
    }
    expect_ab_fail
    # ci/gate-flake-proof.sh --slowed repeats only the slowed case.
    [ -z "${GATE_ONLY_SLOWED:-}" ] || exit 0
    measure "$out/perturbed" 0 full --perturb-fingerprint 1e-3
    expect_fail "the fingerprint's lr x 1.001" fingerprint "$out/perturbed"
    ;;
  "")
    if ref=$(reference_binary); then
      sha=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["reference"]["commit"][:12])' ci/baseline.json)
      load0=$(cut -d' ' -f1 /proc/loadavg)
      ab_measure "$out/ab" "$ref" "$bench" "the reference build $sha" && rc1=0 || rc1=$?
      cat "$out/gate.txt" 2>/dev/null || true
      load_note "$load0"
      memory_fingerprint "$out/m" && rc2=0 || rc2=$?
      cat "$out/gate2.txt" 2>/dev/null || true
      exit "$(worst "$rc1" "$rc2")"
    fi
    echo "gate: falling back to the shares recorded in ci/baseline.json" >&2
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
