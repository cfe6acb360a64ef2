#!/usr/bin/env bash
# Runs the CI gate N times on the unchanged tree and prints one line per run:
# when it ended, its exit status, wall seconds, the load average, the gated
# 1-thread shares with their floors, how many rounds the pool needed (more
# than 2 means a confirmation ran), and the 2-thread shares it reports.
#   ci/gate-flake-proof.sh [N]     (default 20)
# Any exit other than 0 on an unchanged tree is a spurious failure. The
# summary line at the end counts them. Progress on stderr, the log on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "gate-flake-proof: N must be a positive integer, got '$n'" >&2; exit 2; }
swift build -c release --product jsae-bench >/dev/null
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "# ci/gate-flake-proof.sh $n on $(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- ci Sources Benchmarks Package.swift || echo ' (with local changes)'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
failures=0
for ((i = 1; i <= n; i++)); do
  echo "gate-flake-proof: run $i/$n" >&2
  start=$(date +%s)
  bash ci/bench-gate.sh > "$log" 2>&1 && rc=0 || rc=$?
  end=$(date +%s)
  [ "$rc" = 0 ] || failures=$((failures + 1))
  python3 - "$log" "$i" "$rc" "$((end - start))" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(date -u +%H:%M:%SZ)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
i, rc, secs, load, ended = sys.argv[2:7]
def row(key):
    m = re.search(rf"^{key}\s+(\S+(?: MiB)?)\s+(\S+(?: MiB)?)\s+((?:>=|<=|rtol) \S+(?: MiB)?|-)\s+(\S+)", text, re.M)
    return m.groups() if m else ("?", "?", "?", "?")
rounds = re.findall(r"(\d+) rounds of", text)
s, j = row("sae_cpu_efficiency_1t_p75"), row("jsae_cpu_efficiency_1t_p75")
s2, j2 = row("sae_efficiency"), row("jsae_efficiency")
fp = row(r"fingerprint loss \(worst: step \d+\)")
print(f"{int(i):2}  ended {ended}  exit {rc}  {int(secs):4} s  load {load}  rounds {rounds[-1] if rounds else '?'}  "
      f"1t CPU paired p75: SAE {s[1]:>6} ({s[2]}) {s[3]:8}  JSAE {j[1]:>6} ({j[2]}) {j[3]:8} | "
      f"2t single run (reported): SAE {s2[1]:>6} JSAE {j2[1]:>6} | fingerprint {fp[3]}  -> {'pass' if rc == '0' else 'FAIL'}")
PY
  if [ "$rc" != 0 ]; then sed 's/^/    /' "$log"; fi
done
echo "# $n runs, $failures failed"
[ "$failures" = 0 ]
