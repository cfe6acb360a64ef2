#!/usr/bin/env bash
# The quick reproduction through a real Slurm (22.05, single node): munged,
# slurmctld and slurmd are started here as this script's own processes
# (configuration, state and logs in a temporary folder, ports 16817/16818)
# and stopped by PID on exit. It submits `jsae reproduce --quick --slurm`
# with OUT/slurm/submit.sh and checks that
#   - every run and the report finish, and summary.json equals the
#     monolithic reproduction's (ci/compare_summaries.py, as the swift test);
#   - a task whose time limit is shorter than its run is signalled 120 s
#     before it, jsae checkpoints and exits 143, the task requeues itself,
#     and the requeued task resumes from the checkpoint.
# Tasks get a 3-minute limit, so the signal comes about a minute into each
# run, and --steps 300 (instead of --quick's 80) so that a run is still
# training then; once a task has been requeued, this script raises its
# limit to 30 minutes (scontrol update while it waits to start again), so
# that the resumed run can finish. That the numbers are unchanged by the
# interruption is what the summary comparison shows. Credentials expire
# after 30 s instead of 120 (cred_expire), since Slurm holds a requeued job
# until then.
# Needs root (slurmd) and a release jsae (JSAE=path, default
# .build/release/jsae). Installs slurm-wlm and munge with apt-get when they
# are missing. Where that or the daemons fail, it says SKIP and why and
# exits 0: that says nothing about jsae. Takes 5-10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
JSAE=${JSAE:-.build/release/jsae}
[ -x "$JSAE" ] || { echo "ci/slurm-check.sh: no jsae at $JSAE: build first (swift build -c release --product jsae)" >&2; exit 1; }
JSAE=$(realpath "$JSAE")
start=$(date +%s)
say() { echo "ci/slurm-check.sh [$(( $(date +%s) - start )) s]: $*"; }
skip() { say "SKIP: $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip "slurmd must run as root here, and this is uid $(id -u)"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge with apt-get"
  if ! DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q slurm-wlm munge >/tmp/slurm-check-apt.log 2>&1; then
    skip "apt-get install slurm-wlm munge failed: $(tail -n 1 /tmp/slurm-check-apt.log)"
  fi
fi

work=$(mktemp -d /tmp/slurm-check.XXXXXX)
pids=()
cleanup() {
  status=$?
  # Jobs first, so that no slurmstepd outlives its slurmd; then the daemons this script started.
  if [ -n "${SLURM_CONF:-}" ] && [ ${#pids[@]} -gt 1 ]; then scancel -u root >/dev/null 2>&1 || true; sleep 2; fi
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ ${#pids[@]} -gt 0 ] && say "stopped the daemons it started (pids ${pids[*]})"
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

# munge: a fresh key, its own socket.
dd if=/dev/urandom of="$work/munge.key" bs=1024 count=1 status=none
chmod 0400 "$work/munge.key"
mkdir -m 0700 "$work/munge"
munged -F --force --key-file="$work/munge.key" --socket="$work/munge/socket" --pid-file="$work/munge/munged.pid" \
  --seed-file="$work/munge/seed" --log-file="$work/munge/munged.log" >"$work/munge/munged.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/munge/socket" ] && break; sleep 0.2; done
[ -S "$work/munge/socket" ] || skip "munged did not start: $(tail -n 2 "$work/munge/munged.log" 2>/dev/null | tr '\n' ' ')"

node=$(hostname -s)
mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=jsaecheck
SlurmctldHost=$node
AuthType=auth/munge
AuthInfo=socket=$work/munge/socket,cred_expire=30
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=3600
KillWait=30
$(slurmd -C | head -n 1) State=UNKNOWN
PartitionName=check Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"
slurmctld -D -f "$SLURM_CONF" >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" >"$work/slurmd.out" 2>&1 &
pids+=($!)
state=""
for _ in $(seq 60); do
  state=$(sinfo -h -n "$node" -o %T 2>/dev/null || true)
  [ "$state" = idle ] && break
  sleep 1
done
[ "$state" = idle ] || skip "the node did not become idle within 60 s (state '$state'): $(tail -n 3 "$work/slurmctld.log" "$work/slurmd.log" 2>/dev/null | tr '\n' ' ')"
say "Slurm $(sinfo -V | cut -d' ' -f2) up: node $node idle ($(slurmd -C | head -n 1 | grep -o 'CPUs=[0-9]* .*RealMemory=[0-9]*'))"

# The plan and its submission. OUT is under this folder, which every "node" (one) shares.
sample=$root/reproduce/sample
out=$work/split
"$JSAE" reproduce --quick --steps 300 --pretrained "$sample/minilm-l3-pretrained.h5" --randomized "$sample/minilm-l3-randomized.h5" --out "$out" \
  --slurm --slurm-cpus 1 --slurm-mem 1500M --slurm-time 3 --slurm-partition check >"$work/plan.txt"
say "plan: $(grep -c -v '^#' "$work/plan.txt") commands; $(grep '^#SBATCH' "$out/slurm/runs.sbatch" | tr '\n' ' ')"
submitted=$("$out/slurm/submit.sh")
echo "$submitted"
array=$(echo "$submitted" | sed -n 's/^runs: \([0-9]*\).*/\1/p')
report=$(echo "$submitted" | sed -n 's/^report: \([0-9]*\).*/\1/p')
[ -n "$array" ] && [ -n "$report" ] || { say "FAILED: submit.sh printed no job ids"; exit 1; }

# The monolithic reproduction to compare with, here, while Slurm runs the tasks.
say "monolithic reproduction (beside the tasks)"
"$JSAE" reproduce --quick --steps 300 --pretrained "$sample/minilm-l3-pretrained.h5" --randomized "$sample/minilm-l3-randomized.h5" \
  --out "$work/monolithic" >"$work/monolithic.out" 2>"$work/monolithic.err" &
mono=$!

field() { scontrol show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1; }
raised=""
deadline=$(( $(date +%s) + 2400 ))
while :; do
  [ "$(date +%s)" -lt "$deadline" ] || { say "FAILED: the jobs did not finish within 40 minutes"; squeue; exit 1; }
  for t in 0 1 2 3; do
    id="${array}_$t"
    if [ "$(field "$id" Restarts)" -ge 1 ] 2>/dev/null && [[ " $raised " != *" $t "* ]]; then
      scontrol update JobId="$id" TimeLimit=30
      raised="$raised $t"
      say "task $t was requeued (Restarts=$(field "$id" Restarts), state $(field "$id" JobState)): time limit raised to $(field "$id" TimeLimit)"
    fi
  done
  rstate=$(field "$report" JobState)
  case "$rstate" in
    COMPLETED) break ;;
    PENDING|RUNNING|CONFIGURING|COMPLETING) sleep 5 ;;
    *) say "FAILED: the report job is $rstate ($(field "$report" Reason))"; squeue; cat "$out"/slurm/logs/*; exit 1 ;;
  esac
done
say "report job $report completed"
wait "$mono" || { say "FAILED: the monolithic reproduction failed: $(tail -n 1 "$work/monolithic.err")"; exit 1; }

for t in 0 1 2 3; do
  id="${array}_$t"
  say "task $t: $(field "$id" JobState), exit $(field "$id" ExitCode), restarts $(field "$id" Restarts), time limit $(field "$id" TimeLimit)"
done
for f in "$out"/slurm/logs/run-*.log "$out"/slurm/logs/report-*.log; do
  echo "----- $(basename "$f") (progress lines of steps left out)"
  grep -v '\] step [0-9]*/' "$f" || true
done
echo "-----"

failures=0
if ! python3 ci/compare_summaries.py "$work/monolithic/summary.json" "$out/summary.json"; then failures=$((failures + 1)); fi
logs=$(cat "$out"/slurm/logs/run-*.log)
requeued=$(echo "$raised" | wc -w)
stopped=$(echo "$logs" | grep -c "jsae exited with status 143" || true)
if [ "$requeued" -ge 1 ] && echo "$logs" | grep -q "task: got SIGTERM" && [ "$stopped" -ge 1 ] \
   && echo "$logs" | grep -q "requeueing job" && echo "$logs" | grep -q "resuming from"; then
  say "$requeued task(s) signalled before their limit and requeued; $stopped of them stopped training with exit 143 and resumed from their checkpoint"
else
  say "FAILED: no task shows SIGTERM, exit 143, requeue and resume (requeued: '$raised')"; failures=$((failures + 1))
fi
if grep -q '\] training:' "$out"/slurm/logs/report-*.log; then say "FAILED: the report job trained"; failures=$((failures + 1)); fi
[ "$failures" = 0 ] || { say "FAILED: $failures check(s)"; exit 1; }
say "passed"
