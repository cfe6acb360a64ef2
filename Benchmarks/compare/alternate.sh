#!/bin/bash
# Whole-process times of two commands run alternately, A B A B ..., after one
# warm-up run of each, as /usr/bin/time accounts each finished run: wall,
# CPU (user + system) and peak resident memory, each as min, median and max,
# and the median of the per-pair ratios A/B (a ratio taken pair by pair holds
# when a shared machine's speed drifts between pairs).
#
#   Benchmarks/compare/alternate.sh RUNS 'COMMAND A' 'COMMAND B'
#   e.g. Benchmarks/compare/alternate.sh 6 'rm -rf ta && old/jsae train ... --out ta' 'rm -rf tb && new/jsae train ... --out tb'
#
# Each command is one string run by sh -c; its output is discarded. A
# command that exits non-zero stops the comparison (exit 2, naming it).
set -euo pipefail
if [ $# -ne 3 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; fi
runs=$1; cmd_a=$2; cmd_b=$3
[ -x /usr/bin/time ] || { echo "alternate: /usr/bin/time: not installed (Debian package time)" >&2; exit 2; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/alternate.XXXXXX")
one() { # side, run number, command
  if ! /usr/bin/time -f '%e %U %S %M' -o "$dir/$1-$2" sh -c "$3" > /dev/null 2> "$dir/$1-$2.err"; then
    echo "alternate: command $1 failed in run $2 ($3); its stderr is $dir/$1-$2.err" >&2; exit 2
  fi
}
one A warmup "$cmd_a"; one B warmup "$cmd_b"
for i in $(seq "$runs"); do
  echo "alternate: pair $i/$runs" >&2
  one A "$i" "$cmd_a"; one B "$i" "$cmd_b"
done
python3 - "$dir" "$runs" <<'PY'
import sys, statistics as st
d, n = sys.argv[1], int(sys.argv[2])
def read(side, i):
    wall, user, sys_, rss = open(f'{d}/{side}-{i}').read().split()[-4:]
    return {'wall s': float(wall), 'cpu s': float(user) + float(sys_), 'peak MiB': int(rss) / 1024}
A = [read('A', i) for i in range(1, n + 1)]
B = [read('B', i) for i in range(1, n + 1)]
print(f'{n} runs each, alternately, after one warm-up each')
print(f'{"":14}{"min":>10}{"median":>10}{"max":>10}')
for side, rows in (('A', A), ('B', B)):
    for key in ('wall s', 'cpu s', 'peak MiB'):
        v = [r[key] for r in rows]
        print(f'{side + " " + key:14}{min(v):10.3f}{st.median(v):10.3f}{max(v):10.3f}')
for key in ('wall s', 'cpu s'):
    r = [a[key] / b[key] for a, b in zip(A, B)]
    print(f'{"A/B " + key:14}{min(r):10.4f}{st.median(r):10.4f}{max(r):10.4f}')
PY
rm -rf "$dir"
