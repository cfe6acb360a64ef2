#!/usr/bin/env bash
# Runs the CI gate's efficiency check N times and prints one line per run:
# when it ended, its exit status, wall seconds, the load average, how many
# pairs the A/B check needed, and each ratio with its interval and status.
#   ci/gate-flake-proof.sh [N]            the unchanged tree against its
#                                         reference build (default N = 20):
#                                         any failure is spurious
#   ci/gate-flake-proof.sh --slowed [N]   the build with 10% more work per step
#                                         against itself unslowed: any pass is
#                                         a missed regression
# The summary line at the end counts the wrong verdicts. Progress on stderr,
# the log on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=unchanged
if [ "${1:-}" = "--slowed" ]; then mode=slowed; shift; fi
n=${1:-20}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "gate-flake-proof: N must be a positive integer, got '$n'" >&2; exit 2; }
swift build -c release --product jsae-bench >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "# ci/gate-flake-proof.sh $([ "$mode" = slowed ] && echo '--slowed ')$n on $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- ci Sources Benchmarks Package.swift || echo ' (with local changes)'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
wrong=0
for ((i = 1; i <= n; i++)); do
  echo "gate-flake-proof: run $i/$n ($mode)" >&2
  start=$(date +%s)
  if [ "$mode" = slowed ]; then
    GATE_ONLY_SLOWED=1 bash ci/bench-gate.sh --selftest > "$log" 2>&1 && rc=0 || rc=$?
    want=0   # the self-test exits 0 when the slowed run was failed
  else
    bash ci/bench-gate.sh > "$log" 2>&1 && rc=0 || rc=$?
    want=0
  fi
  end=$(date +%s)
  [ "$rc" = "$want" ] || wrong=$((wrong + 1))
  python3 - "$log" "$i" "$rc" "$((end - start))" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u +%H:%M:%SZ)" "$want" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
i, rc, secs, load, ended, want = sys.argv[2:8]
def row(key):
    m = re.search(rf"^\s*{key}\s+\S+ ms\s+\S+ ms\s+(\S+ \[[^\]]*\])\s+>= \S+\s+(\S+)", text, re.M)
    return m.groups() if m else ("?", "?")
pairs = re.findall(r"(\d+) pairs of", text)
s, j = row("sae_speed_ratio"), row("jsae_speed_ratio")
fp = re.search(r"^fingerprint loss \(worst: step \d+\).*\s(\S+)$", text, re.M)
mem = re.findall(r"^\w+_peak_bytes.*\s(\S+)$", text, re.M)
print(f"{int(i):2}  ended {ended}  exit {rc}  {int(secs):4} s  load {load}  pairs {pairs[-1] if pairs else '?':>2}  "
      f"SAE {s[0]:>22} {s[1]:9}  JSAE {j[0]:>22} {j[1]:9}"
      + (f" | memory {'/'.join(mem) or '-'} | fingerprint {fp.group(1) if fp else '-'}" if not text.count("slowdown") else "")
      + f"  -> {'as expected' if rc == want else 'WRONG'}")
PY
  if [ "$rc" != "$want" ]; then sed 's/^/    /' "$log"; fi
done
echo "# $n runs, $wrong wrong"
[ "$wrong" = 0 ]
