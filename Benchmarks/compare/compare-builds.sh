#!/bin/bash
# Before/after table for two jsae-bench builds, phase by phase, with each
# phase's limit (its FLOPs at the in-run sgemm ceiling or its bytes at the
# in-run bandwidth, from jsae-bench's JSON).
#
#   Benchmarks/compare/compare-builds.sh BEFORE_BIN AFTER_BIN [PAIRS] [jsae-bench flags...]
#   e.g. Benchmarks/compare/compare-builds.sh ../before/.build/release/jsae-bench .build/release/jsae-bench 5 --preset pythia-70m
#
# The two builds run alternately, BEFORE AFTER BEFORE AFTER ..., PAIRS times
# (default 5), each with --no-profile and its own --json, so that drift of a
# shared machine hits both; the table gives the medians, the median of the
# per-pair ratios AFTER/BEFORE, and each phase's limit and median ×limit
# for both. It also says whether the golden loss fingerprint is the same in
# every run (a speed change must not move it). Progress on stderr; the
# table on stdout; the JSON files stay in the folder printed at the end.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; fi
before=$1; after=$2; shift 2
pairs=5
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then pairs=$1; shift; fi
for b in "$before" "$after"; do [ -x "$b" ] || { echo "compare-builds: $b: not an executable" >&2; exit 2; }; done
[ "$pairs" -ge 1 ] || { echo "compare-builds: PAIRS must be at least 1" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/compare-builds.XXXXXX")
for i in $(seq "$pairs"); do
  for side in before after; do
    bin=$before; [ $side = after ] && bin=$after
    echo "compare-builds: pair $i/$pairs, $side" >&2
    if ! "$bin" "$@" --no-profile --json "$dir/$side-$i.json" > "$dir/$side-$i.out" 2> "$dir/$side-$i.err"; then
      echo "compare-builds: $bin failed (exit $?); its stderr is $dir/$side-$i.err" >&2; exit 2
    fi
  done
done
python3 - "$dir" "$pairs" <<'PY'
import json, sys, statistics as st
d, n = sys.argv[1], int(sys.argv[2])
B = [json.load(open(f'{d}/before-{i}.json')) for i in range(1, n + 1)]
A = [json.load(open(f'{d}/after-{i}.json')) for i in range(1, n + 1)]
med = st.median
MS_KEY = {'phaseLimits': 'phasesMs', 'saePhaseLimits': 'saePhasesMs'}
def ms(j, key, p):
    """A phase's ms; a build from before the limit column (no phaseLimits) has phasesMs."""
    if key in j: return j[key][p]['ms'] if p in j[key] else None
    return j.get(MS_KEY[key], {}).get(p)
def limit(j, key, p, other):
    """A phase's limit ms from this run, or, for a build without the limit column,
    from the paired run of the other build (same shape; that run's in-run ceiling)."""
    src = j if key in j else other
    return src[key][p]['limitMs'] if key in src and p in src[key] else None
def fmt(x, f='{:.1f}'): return '-' if x is None else f.format(x)
def mednn(xs):
    xs = [x for x in xs if x is not None]
    return med(xs) if xs else None
def table(title, key):
    print(f'\n{title}\n')
    print('| phase | before ms | after ms | after/before (median of pairs) | limit ms | × limit before | × limit after | bound |')
    print('|---|---|---|---|---|---|---|---|')
    ref = A[0] if key in A[0] else B[0]
    for p in ref[key]:
        b = [ms(j, key, p) for j in B]; a = [ms(j, key, p) for j in A]
        if (mednn(b) or 0) == 0 and (mednn(a) or 0) == 0: continue
        lb = [limit(x, key, p, y) for x, y in zip(B, A)]; la = [limit(y, key, p, x) for x, y in zip(B, A)]
        ratio = mednn([y / x for x, y in zip(b, a) if x and y is not None])
        xb = mednn([x / l for x, l in zip(b, lb) if x is not None and l]); xa = mednn([y / l for y, l in zip(a, la) if y is not None and l])
        print(f"| {p} | {fmt(mednn(b))} | {fmt(mednn(a))} | {fmt(ratio, '{:.2f}')} | {fmt(mednn(la))} | "
              f"{fmt(xb, '{:.1f}×')} | {fmt(xa, '{:.1f}×')} | {ref[key][p]['bound']} |")
print(f"{n} pairs, {B[0]['preset']} preset, machine: {A[0]['environment']}")
if 'phaseLimits' not in B[0]:
    print("The before build has no limit column: its × limit uses the limit of the after run it was paired with.")
table('JSAE pair', 'phaseLimits')
table('single SAE', 'saePhaseLimits')
print('\n| metric | before | after | after/before (median of pairs) |\n|---|---|---|---|')
for m in ['jsae_ms_per_step', 'jsae_efficiency', 'jsae_over_limit', 'jsae_tokens_per_s', 'sae_ms_per_step', 'sae_efficiency', 'sae_over_limit', 'sae_tokens_per_s', 'jsae_peak_bytes', 'sae_peak_bytes', 'ceiling_gflops', 'bandwidth_gbs']:
    b = [j['metrics'].get(m) for j in B]; a = [j['metrics'].get(m) for j in A]
    ratio = mednn([y / x for x, y in zip(b, a) if x and y is not None])
    print(f"| {m} | {fmt(mednn(b), '{:.4g}')} | {fmt(mednn(a), '{:.4g}')} | {fmt(ratio, '{:.3f}')} |")
if all(j.get('fingerprintLoss') is None for j in B + A):
    print("\nGolden loss fingerprint: not run (--no-fingerprint)")
else:
    same = all(json.dumps(x.get('fingerprintLoss')) == json.dumps(y.get('fingerprintLoss')) for x, y in zip(B, A))
    print(f"\nGolden loss fingerprint identical in every run: {'yes' if same else 'NO'}")
hashes = lambda R: sorted({str(j.get('parameterFingerprint')) for j in R})
print(f"Parameters after the JSAE steps (hash), before: {', '.join(hashes(B))}; after: {', '.join(hashes(A))}; "
      f"identical: {'yes' if hashes(B) == hashes(A) and len(hashes(B)) == 1 else 'NO'}")
PY
echo "compare-builds: JSON and logs in $dir" >&2
