#!/usr/bin/env python3
"""CI regression gate for jsae-bench (stdlib only).

    ci/gate.py check DIR [--baseline ci/baseline.json] [--only GROUPS]
        Gates one measurement (a directory of jsae-bench --json results, see
        below) against the baseline for the OpenBLAS core it ran on, and
        prints one table. Exit 0: no regression (improvements are reported,
        not failed); exit 3: a regression; exit 2: unusable input.
        GROUPS: a comma list of efficiency, memory, fingerprint (default all).
    ci/gate.py ab DIR [--final] [--label TEXT] [--baseline ci/baseline.json]
        Gates an A/B measurement: DIR holds ref-N.json and cur-N.json, pair
        N being one 1-thread --interleave-ceiling run of the reference build
        and one of the current build, back to back. Each pair gives the speed
        ratio, reference over current median step CPU time (the same FLOPs);
        the median ratio over pairs, with an order-statistic interval, is
        held against 1 - efficiency_drop (baseline "reference", defaults
        AB_DEFAULTS). Exit 0: the interval lies above the floor; 3: below
        it; 4: it spans the floor and fewer than max_pairs pairs were run.
        With --final, or at max_pairs, 3 when the median is under the floor
        and the interval under 1, else 0.
    ci/gate.py update DIR [DIR ...] [--baseline ci/baseline.json]
        Writes the running core's baseline entry: the gated 1-thread shares
        pooled over all the measurements' rounds, the other
        metrics the median over the measurements; the fingerprint from the
        first. Prints the diff. An explicit step, never done by `check`.
    ci/gate.py selftest
        Checks the gate's logic on perturbed copies of synthetic results.

A measurement directory (ci/bench-gate.sh writes it) holds
  cpu-N.json   --threads 1 --interleave-ceiling runs (N = 1, 2, ...)
  full.json    one plain --threads 2 run, between them: peak memory, the
               fingerprint, and the single-run 2-thread shares (reported for
               a core with a baseline; what the fallback gates)
(wall-N.json, --threads 2 --interleave-ceiling runs, are pooled and reported
too when present; they are not gated.)

Efficiency is always a share of the in-run sgemm ceiling, never a time. A
run's steps are each timed beside a ceiling product (one before each step,
one after the last), by the process's CPU clock with one thread. Each step
gets its own share, against the mean of the two products on either side of
it, so that what changes the machine's speed for a while (clock boost,
another tenant's cache and DRAM traffic) changes both sides of the ratio.
The metric is the upper quartile of these per-step shares pooled over all
rounds: load only lowers a step's share, so the upper quartile leans away
from it, without resting on one lucky sample as a maximum does. The CPU
clock does not count the turns other processes take on the core. On an idle
machine three measurements of 8 steps gave 0.441-0.455 (SAE) and
0.429-0.437 (JSAE), where the earlier estimator, the fastest step against
the fastest product found independently, gave 0.39-0.46: one lucky fast
product lowered every share of its run. Over 20 gate runs spread over ten
minutes the JSAE share still drifted by about +-7% (ci/gate-flake-proof.txt),
which is why a failure is confirmed before it stands (ci/bench-gate.sh). Wall-clock shares with two threads
move with every other process on the two cores (measured: 0.24-0.45 for
the same tree within minutes), so no tight band can hold on them here.

Baseline (ci/baseline.json, version 2): the top-level keys are the version-1
baseline, kept as they were (an older gate.py still reads the file) and used
as the fallback; "cores" holds one entry per OpenBLAS core name with its own
metrics and tolerances. With no entry for the running core the gate says so
in one line and compares the fallback's single-run efficiencies with the
widest band (the fallback's tolerances). A version-1 file is all fallback.
"""
import datetime
import difflib
import glob
import json
import math
import os
import statistics
import sys

REGRESSION = 3
BAD_INPUT = 2
UNDECIDED = 4
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BASELINE = os.path.join(HERE, "baseline.json")
GROUPS = ("efficiency", "memory", "fingerprint")

# The fallback's efficiencies: one plain run each, the version-1 metrics.
FALLBACK_EFFICIENCY = ("sae_efficiency", "jsae_efficiency")
# A core's entry: paired per-step shares with 1 thread by CPU time, upper
# quartile (gated) ...
CORE_EFFICIENCY = ("sae_cpu_efficiency_1t_p75", "jsae_cpu_efficiency_1t_p75")
# ... and with 2 threads by wall time (reported beside the baseline, not gated).
CORE_REPORTED = ("sae_efficiency", "jsae_efficiency", "sae_efficiency_2t_p75", "jsae_efficiency_2t_p75")
MEMORY = ("sae_peak_bytes", "jsae_peak_bytes")

DEFAULT_TOLERANCES = {
    # The widest band, for a core without a baseline: single plain runs on
    # this shared 2-core machine spread about +-15-20% in efficiency.
    "efficiency_drop": 0.35,
    # Peak RSS repeats to within a few percent; 15% growth is a leak or a
    # new buffer.
    "memory_growth": 0.15,
    # The fingerprint runs in Float; OpenBLAS kernels differ slightly across
    # CPUs (summation order), observed <= 1e-6 relative over 20 steps.
    "fingerprint_rtol": 1e-4,
    "fingerprint_atol": 1e-6,
}
CORE_TOLERANCES = {
    # A 15% slowdown is a 13% drop in share (1 - 1/1.15); 10% fails it with
    # 3 points to spare, and leaves 10 points for the paired shares to move
    # with the machine's load. Over 20 gate runs on an idle machine they
    # moved about +-5% (SAE) and +-7% (JSAE) around their medians, the JSAE
    # share coming within 1.4 points of its floor (ci/gate-flake-proof.txt).
    "efficiency_drop": 0.10,
    "memory_growth": 0.15,
}


# The paired comparison against the reference build (ci/baseline.json's
# "reference"). Its band is 5%: a 10% slowdown is a ratio of 0.909, 4 points
# below the floor, and an unchanged tree sits 5 points above it. Pairs of
# runs minutes apart share the machine's state (clock, other tenants), so
# their ratio moves far less than a share against a baseline recorded on
# another day: idle, pair ratios spread about +-3%; under two concurrent
# builds on both cores about +-5% (ci/gate-flake-proof.txt).
AB_DEFAULTS = {"efficiency_drop": 0.05, "min_pairs": 4, "max_pairs": 12}
# The median's interval [r(j), r(n+1-j)] from order statistics covers the
# true median ratio with probability >= 1 - 2 * P(Binomial(n, 1/2) < j); at
# 0.875 four pairs all on one side of the floor decide.
AB_COVERAGE = 0.875
AB_KEYS = (("sae_speed_ratio", "saePaired"), ("jsae_speed_ratio", "jsaePaired"))


def fail(msg):
    print(f"gate: {msg}", file=sys.stderr)
    sys.exit(BAD_INPUT)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path}: {e}")


def quantile(values, q):
    """Linear-interpolated q-quantile of a non-empty list."""
    v = sorted(values)
    i = q * (len(v) - 1)
    lo = int(i)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (i - lo)


def paired_shares(runs, key, clock):
    """Each step's share of the ceiling measured beside it (the mean of the
    products before and after it), over all runs."""
    shares = []
    for r in runs:
        x = r[key]
        steps, ceiling = x[f"step{clock}Seconds"], x[f"ceiling{clock}Seconds"]
        if not steps or len(ceiling) != len(steps) + 1:
            raise ValueError(f"{key}: {len(steps)} steps need {len(steps) + 1} ceiling products, got {len(ceiling)}")
        for i, t in enumerate(steps):
            shares.append(x["flops"] / t / (x["probeFlops"] / ((ceiling[i] + ceiling[i + 1]) / 2)))
    return shares


def pooled_p75(runs, key, clock):
    """The upper quartile of the per-step paired shares over all runs."""
    return quantile(paired_shares(runs, key, clock), 0.75)


def figures(cpu, wall, full):
    """The gated metrics of whichever kinds of run there are."""
    metrics = {}
    if cpu:
        metrics["sae_cpu_efficiency_1t_p75"] = pooled_p75(cpu, "saePaired", "CPU")
        metrics["jsae_cpu_efficiency_1t_p75"] = pooled_p75(cpu, "jsaePaired", "CPU")
    if wall:
        metrics["sae_efficiency_2t_p75"] = pooled_p75(wall, "saePaired", "Wall")
        metrics["jsae_efficiency_2t_p75"] = pooled_p75(wall, "jsaePaired", "Wall")
    if full:
        for k in FALLBACK_EFFICIENCY + MEMORY:
            metrics[k] = full["metrics"][k]
    return metrics


def measure(directory):
    """The gate's figures from a measurement directory, plus its context."""
    if not os.path.isdir(directory):
        fail(f"{directory}: not a directory")
    cpu = [load(p) for p in sorted(glob.glob(os.path.join(directory, "cpu-*.json")))]
    wall = [load(p) for p in sorted(glob.glob(os.path.join(directory, "wall-*.json")))]
    full_path = os.path.join(directory, "full.json")
    full = load(full_path) if os.path.exists(full_path) else None
    runs = cpu + wall + ([full] if full else [])
    if not runs:
        fail(f"{directory}: no cpu-*.json, wall-*.json or full.json")
    for r, kind in [(r, "cpu") for r in cpu] + [(r, "wall") for r in wall]:
        if "saePaired" not in r or "jsaePaired" not in r:
            fail(f"{directory}: a {kind} run without --interleave-ceiling samples")
    try:
        metrics = figures(cpu, wall, full)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        fail(f"{directory}: a result lacks {e} (a jsae-bench from before the gate's version 2?)")
    cores = {r["environment"]["openblasCore"] for r in runs}
    presets = {r["preset"] for r in runs}
    if len(cores) != 1 or len(presets) != 1:
        fail(f"{directory}: runs from several cores {sorted(cores)} or presets {sorted(presets)}")
    return {
        "core": cores.pop(), "preset": presets.pop(), "metrics": metrics,
        "fingerprintLoss": full.get("fingerprintLoss") if full else None,
        "procedure": {"rounds": len(cpu), "steps": cpu[0]["steps"] if cpu else None,
                      "threads": sorted({r["environment"]["packageThreads"] for r in runs})},
        "environment": runs[0]["environment"], "shape": runs[0]["shape"],
    }


def reference(baseline, core):
    """(metrics, tolerances, efficiency keys, note) for this core: its entry, or the fallback."""
    entry = baseline.get("cores", {}).get(core)
    if entry:
        tol = {**DEFAULT_TOLERANCES, **CORE_TOLERANCES, **entry.get("tolerances", {})}
        return entry["metrics"], tol, CORE_EFFICIENCY, None
    tol = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    known = ", ".join(sorted(baseline.get("cores", {}))) or "none"
    fb = baseline.get("environment", {}).get("openblasCore", "?")
    note = (f"gate: no baseline for OpenBLAS core {core} (baseline cores: {known}); falling back to the widest band, "
            f"a {100 * tol['efficiency_drop']:.0f}% efficiency drop against single runs recorded on {fb}")
    return baseline["metrics"], tol, FALLBACK_EFFICIENCY, note


def compare(result, baseline, groups=GROUPS):
    """Rows (metric, baseline, value, band, status), whether anything regressed, and a note."""
    if result["preset"] != baseline.get("preset"):
        fail(f"result is preset {result['preset']!r}, baseline is {baseline.get('preset')!r}")
    bm, tol, eff_keys, note = reference(baseline, result["core"])
    rm = result["metrics"]
    rows, failed = [], False

    def missing(key):
        nonlocal failed
        failed = True
        rows.append((key, "-", "not measured", "-", "FAIL"))

    if "efficiency" in groups:
        for key in eff_keys:
            if key not in rm:
                missing(key)
                continue
            drop = tol["efficiency_drop"]
            b, v = bm[key], rm[key]
            low = b * (1 - drop)
            status = "FAIL" if v < low else ("improved" if v > b * (1 + drop) else "ok")
            failed |= status == "FAIL"
            rows.append((key, f"{100 * b:.1f}%", f"{100 * v:.1f}%", f">= {100 * low:.1f}%", status))
        if eff_keys is CORE_EFFICIENCY:
            for key in CORE_REPORTED:
                if key in rm:
                    b = f"{100 * bm[key]:.1f}%" if key in bm else "-"
                    rows.append((key, b, f"{100 * rm[key]:.1f}%", "-", "reported"))
    if "memory" in groups:
        for key in MEMORY:
            if key not in rm:
                missing(key)
                continue
            b, v = bm[key], rm[key]
            high = b * (1 + tol["memory_growth"])
            status = "FAIL" if v > high else ("improved" if v < b * (1 - tol["memory_growth"]) else "ok")
            failed |= status == "FAIL"
            mib = 1 << 20
            rows.append((key, f"{b / mib:.0f} MiB", f"{v / mib:.0f} MiB", f"<= {high / mib:.0f} MiB", status))
    if "fingerprint" in groups:
        bf, rf = baseline.get("fingerprintLoss"), result.get("fingerprintLoss")
        if bf is None:
            rows.append(("fingerprint loss curve", "none", "-", "-", "not gated"))
        elif rf is None or len(rf) != len(bf):
            failed = True
            rows.append(("fingerprint loss curve", f"{len(bf)} steps", "missing" if rf is None else f"{len(rf)} steps",
                         "same steps", "FAIL"))
        else:
            worst_i, worst = 0, 0.0
            for i, (b, v) in enumerate(zip(bf, rf)):
                ratio = abs(v - b) / (tol["fingerprint_atol"] + tol["fingerprint_rtol"] * abs(b))
                if ratio > worst:
                    worst_i, worst = i, ratio
            status = "FAIL" if worst > 1 else "ok"
            failed |= status == "FAIL"
            rows.append((f"fingerprint loss (worst: step {worst_i})", f"{bf[worst_i]:.7g}", f"{rf[worst_i]:.7g}",
                         f"rtol {tol['fingerprint_rtol']:g}", status))
    return rows, failed, note


def table(rows, head=("metric", "baseline", "value", "allowed", "status")):
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(len(head))]
    line = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), "-" * len(line(head))] + [line(r) for r in rows])


def check(directory, baseline_path, groups):
    result = measure(directory)
    rows, failed, note = compare(result, load(baseline_path), groups)
    if note:
        print(note)
    p = result["procedure"]
    if p["rounds"]:
        print(f"gate: OpenBLAS core {result['core']}, preset {result['preset']}, {p['rounds']} rounds of "
              f"{p['steps']} steps, threads {p['threads']}")
    else:
        print(f"gate: OpenBLAS core {result['core']}, preset {result['preset']}, one run, threads {p['threads']}")
    print(table(rows))
    if failed:
        print(f"gate: REGRESSION against {os.path.relpath(baseline_path)} "
              f"(update it only with: ci/bench-gate.sh --update-baseline)")
        return REGRESSION
    print("gate: no regression")
    return 0


def median_interval(values, coverage=AB_COVERAGE):
    """A distribution-free interval for the median of `values`: the order
    statistics r(j), r(n+1-j) with the largest j whose coverage (for any
    continuous distribution) is at least `coverage`; None when n is too small
    for any."""
    v = sorted(values)
    n = len(v)
    best = 0
    for j in range(1, n // 2 + 1):
        below = sum(math.comb(n, i) for i in range(j)) / 2 ** n
        if 1 - 2 * below >= coverage:
            best = j
    return (v[best - 1], v[n - best]) if best else None


def run_step_cpu(run, key):
    """The median over one run's steps of the step's CPU seconds (1 thread)."""
    t = run[key]["stepCPUSeconds"]
    if not t or any(not (isinstance(x, (int, float)) and x > 0) for x in t):
        raise ValueError(f"{key}: step CPU seconds must be positive numbers, got {t!r}")
    return statistics.median(t)


def ab_load(directory):
    """The pairs (reference run, current run) of an A/B measurement directory."""
    if not os.path.isdir(directory):
        fail(f"{directory}: not a directory")
    refs = sorted(glob.glob(os.path.join(directory, "ref-*.json")), key=lambda p: int(p.rsplit("-", 1)[1][:-5]))
    curs = sorted(glob.glob(os.path.join(directory, "cur-*.json")), key=lambda p: int(p.rsplit("-", 1)[1][:-5]))
    if not refs or len(refs) != len(curs):
        fail(f"{directory}: {len(refs)} ref-N.json and {len(curs)} cur-N.json; an A/B measurement needs equal, non-zero counts")
    pairs = [(load(a), load(b)) for a, b in zip(refs, curs)]
    for a, b in pairs:
        for r in (a, b):
            if not isinstance(r, dict) or "saePaired" not in r or "jsaePaired" not in r:
                fail(f"{directory}: a run without --interleave-ceiling samples")
        if a["environment"]["openblasCore"] != b["environment"]["openblasCore"] or a["preset"] != b["preset"]:
            fail(f"{directory}: a pair from different cores or presets")
    return pairs


def ab_rows(pairs, tol, final):
    """Rows (metric, reference, value, ratio [interval], allowed, status) and
    the verdict: 0 pass, REGRESSION, or UNDECIDED (more pairs would decide)."""
    floor = 1 - tol["efficiency_drop"]
    rows, verdicts = [], []
    for name, key in AB_KEYS:
        try:
            ref = [run_step_cpu(a, key) for a, _ in pairs]
            cur = [run_step_cpu(b, key) for _, b in pairs]
        except (KeyError, TypeError, ValueError) as e:
            fail(f"a run's {key} samples are unusable: {e}")
        # Speed ratio: the same FLOPs in both builds, so reference time over
        # current time. Times, not shares of each build's own ceiling probe:
        # a change to how the probe runs must not move the ratio.
        ratios = [r / c for c, r in zip(cur, ref)]
        med = statistics.median(ratios)
        iv = median_interval(ratios)
        if iv and iv[0] >= floor:
            status = "improved" if iv[0] > 1 + tol["efficiency_drop"] else "ok"
        elif iv and iv[1] < floor:
            status = "FAIL"
        elif final or len(pairs) >= tol["max_pairs"]:
            # Out of pairs: a regression must both have its median under the
            # floor and be slower than the reference with the interval's
            # confidence (its upper end under 1). A noisy unchanged build
            # (a median of 0.946 with an interval up to 1.007, measured under
            # heavy load) passes; a 10% slowdown (medians 0.87-0.92, upper
            # ends 0.95-0.98 under the same load) fails.
            status = "FAIL" if med < floor and iv and iv[1] < 1 else "ok"
        else:
            status = "undecided"
        verdicts.append(status)
        span = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "[-, -]"
        rows.append((name, f"{1000 * statistics.median(ref):.1f} ms", f"{1000 * statistics.median(cur):.1f} ms",
                     f"{med:.3f} {span}", f">= {floor:.3f}", status))
    if "FAIL" in verdicts:
        return rows, REGRESSION
    if "undecided" in verdicts:
        return rows, UNDECIDED
    return rows, 0


def ab_tolerances(baseline):
    ref = baseline.get("reference", {}) if isinstance(baseline, dict) else {}
    tol = {**AB_DEFAULTS, **{k: ref[k] for k in AB_DEFAULTS if k in ref}}
    if not (0 < tol["efficiency_drop"] < 1) or not (1 <= tol["min_pairs"] <= tol["max_pairs"]):
        fail(f"reference: efficiency_drop must be in (0, 1) and 1 <= min_pairs <= max_pairs, got {tol}")
    return tol


def ab(directory, baseline_path, final, label):
    """Gates the current build's paired shares against the reference build's,
    run by run, in one measurement."""
    tol = ab_tolerances(load(baseline_path))
    pairs = ab_load(directory)
    rows, verdict = ab_rows(pairs, tol, final)
    a = pairs[0][0]
    print(f"gate: A/B against {label}, OpenBLAS core {a['environment']['openblasCore']}, preset {a['preset']}, "
          f"{len(pairs)} pairs of {a['steps']} steps (single SAE: {a.get('saeSteps', a['steps'])}), 1 thread (ratio: median over pairs of reference / current step CPU time, "
          f"[interval] covering the median with >= {100 * AB_COVERAGE:.1f}%)")
    print(table(rows, ("metric", "reference", "current", "ratio [interval]", "allowed", "status")))
    if verdict == REGRESSION:
        print(f"gate: REGRESSION: the current build is slower than {label} beyond the {100 * tol['efficiency_drop']:.0f}% band")
    elif verdict == UNDECIDED:
        print("gate: undecided: the interval spans the floor; more pairs are needed")
    else:
        print("gate: no regression against the reference build")
    return verdict


def update(directories, baseline_path, reference_commit=None):
    results = [measure(d) for d in directories]
    core = results[0]["core"]
    if any(r["core"] != core for r in results):
        fail("update: measurements from several cores")
    old_text = open(baseline_path).read() if os.path.exists(baseline_path) else ""
    old = json.loads(old_text) if old_text else {}
    new = dict(old)
    keys = CORE_EFFICIENCY + MEMORY
    reported = [k for k in CORE_REPORTED if all(k in r["metrics"] for r in results)]
    for r in results:
        absent = [k for k in keys if k not in r["metrics"]]
        if absent:
            fail(f"update: a measurement lacks {', '.join(absent)}")
    metrics = {k: statistics.median(r["metrics"][k] for r in results) for k in keys + tuple(reported)}
    # The gated shares pool all the measurements' 1-thread rounds (2 x 3 = 6
    # here), the depth a check reaches after its two confirmations.
    cpu_all = [load(p) for d in directories for p in sorted(glob.glob(os.path.join(d, "cpu-*.json")))]
    metrics.update({k: v for k, v in figures(cpu_all, [], None).items() if k in CORE_EFFICIENCY})
    entry = {
        "metrics": metrics,
        "tolerances": old.get("cores", {}).get(core, {}).get("tolerances", CORE_TOLERANCES),
        "procedure": {**results[0]["procedure"], "measurements": len(results), "pooledRounds": len(cpu_all)},
        "environment": results[0]["environment"],
        "recorded": datetime.date.today().isoformat(),
    }
    new["version"] = 3
    if reference_commit:
        new["reference"] = {**AB_DEFAULTS, **old.get("reference", {}), "commit": reference_commit,
                            "recorded": datetime.date.today().isoformat()}
    new["cores"] = {**old.get("cores", {}), core: entry}
    new["fingerprintLoss"] = results[0]["fingerprintLoss"]
    # A file without a fallback gets this run's single-run figures as one.
    if "metrics" not in new:
        new.update({"preset": results[0]["preset"], "tolerances": DEFAULT_TOLERANCES,
                    "metrics": {k: results[0]["metrics"][k] for k in FALLBACK_EFFICIENCY + MEMORY},
                    "environment": results[0]["environment"], "shape": results[0]["shape"]})
    new_text = json.dumps(new, indent=2, sort_keys=True) + "\n"
    tmp = baseline_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new_text)
    os.replace(tmp, baseline_path)
    diff = difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                os.path.relpath(baseline_path) + " (old)", os.path.relpath(baseline_path) + " (new)")
    sys.stdout.writelines(diff)
    print(f"gate: baseline entry for OpenBLAS core {core} rewritten from {len(results)} measurements: "
          f"{os.path.relpath(baseline_path)}")
    return 0


def selftest():
    fallback_metrics = {"sae_efficiency": 0.4, "jsae_efficiency": 0.4, "sae_peak_bytes": 1e8, "jsae_peak_bytes": 2e8}
    core_metrics = {"sae_cpu_efficiency_1t_p75": 0.4, "jsae_cpu_efficiency_1t_p75": 0.4,
                    "sae_efficiency": 0.4, "jsae_efficiency": 0.4,
                    "sae_peak_bytes": 1e8, "jsae_peak_bytes": 2e8}
    base = {"version": 2, "preset": "ci", "tolerances": DEFAULT_TOLERANCES, "metrics": fallback_metrics,
            "environment": {"openblasCore": "Cooperlake"}, "fingerprintLoss": [1.0, 0.5, 0.25],
            "cores": {"Zen": {"metrics": core_metrics, "tolerances": CORE_TOLERANCES}}}
    v1 = {k: v for k, v in base.items() if k not in ("version", "cores")}

    def variant(core="Zen", **changes):
        r = {"core": core, "preset": "ci", "metrics": {**fallback_metrics, **core_metrics},
             "fingerprintLoss": [1.0, 0.5, 0.25]}
        for k, v in changes.items():
            if k == "loss":
                r["fingerprintLoss"] = v
            else:
                r["metrics"][k] = v
        return r

    cases = [
        ("identical", base, variant(), False),
        ("1-thread share -8%: within the 10% band", base, variant(jsae_cpu_efficiency_1t_p75=0.368), False),
        ("1-thread share -13% (a 15% slowdown)", base, variant(jsae_cpu_efficiency_1t_p75=0.4 / 1.15), True),
        ("2-thread wall share halved: reported, not gated, for a core with a baseline", base, variant(sae_efficiency=0.2), False),
        ("improvement is not a failure", base, variant(jsae_cpu_efficiency_1t_p75=0.9, sae_peak_bytes=5e7), False),
        ("memory +50%", base, variant(jsae_peak_bytes=3e8), True),
        ("fingerprint moved 1e-3", base, variant(loss=[1.0, 0.5005, 0.25]), True),
        ("fingerprint shorter", base, variant(loss=[1.0, 0.5]), True),
        ("a core's metric not measured", base, {**variant(), "metrics": fallback_metrics}, True),
        ("unknown core: the fallback's 35% band passes -30%", base, variant(core="Haswell", sae_efficiency=0.28), False),
        ("unknown core: the fallback's 35% band fails -40%", base, variant(core="Haswell", sae_efficiency=0.24), True),
        ("version-1 baseline: fallback for every core", v1, variant(jsae_cpu_efficiency_1t_p75=0.2, jsae_efficiency=0.3), False),
        ("version-1 baseline: halved efficiency fails", v1, variant(jsae_efficiency=0.2), True),
    ]
    bad = 0
    for name, b, result, should_fail in cases:
        _, failed, note = compare(result, b)
        ok = failed == should_fail
        bad += not ok
        print(f"selftest: {'pass' if ok else 'WRONG'}: {name} -> {'fails' if failed else 'passes'}"
              + (" (fallback)" if note else ""))
    # Pooling: each step against the mean of its two neighbouring products,
    # then the upper quartile over all runs' steps. Shares by hand:
    # run 1: 2/4 / (1/1) = 0.5, 2/2 / (1/0.5) = 0.5 (the fast product halves
    # the second step's share too); run 2: 2/1 / (1/1) = 2.0, 2/8 / (1/1) = 0.25.
    # Sorted 0.25 0.5 0.5 2.0; the upper quartile at 2.25 -> 0.5 + 0.25 * 1.5.
    runs = [{"saePaired": {"flops": 2.0, "probeFlops": 1.0, "ceilingCPUSeconds": [1.5, 0.5, 0.5], "stepCPUSeconds": [4.0, 2.0]}},
            {"saePaired": {"flops": 2.0, "probeFlops": 1.0, "ceilingCPUSeconds": [1.0, 1.0, 1.0], "stepCPUSeconds": [1.0, 8.0]}}]
    ok = abs(pooled_p75(runs, "saePaired", "CPU") - 0.875) < 1e-12
    bad += not ok
    print(f"selftest: {'pass' if ok else 'WRONG'}: pooled paired upper-quartile share")
    short = [{"saePaired": {"flops": 1.0, "probeFlops": 1.0, "ceilingCPUSeconds": [1.0], "stepCPUSeconds": [1.0]}}]
    try:
        pooled_p75(short, "saePaired", "CPU")
        ok = False
    except ValueError:
        ok = True
    bad += not ok
    print(f"selftest: {'pass' if ok else 'WRONG'}: a run without a product after its last step is refused")
    # The A/B rule on synthetic pairs: a run whose steps all take t seconds
    # against products of 1 s has share flops / t.
    def pair(ref_t, cur_t):
        run = lambda t: {"saePaired": {"flops": 1.0, "probeFlops": 1.0, "ceilingCPUSeconds": [1.0, 1.0], "stepCPUSeconds": [t]},
                         "jsaePaired": {"flops": 1.0, "probeFlops": 1.0, "ceilingCPUSeconds": [1.0, 1.0], "stepCPUSeconds": [t]}}
        return run(ref_t), run(cur_t)
    tol = dict(AB_DEFAULTS)
    ab_cases = [
        ("A/B: four pairs within 3% of each other pass", [pair(1, t) for t in (0.98, 1.0, 1.02, 1.03)], False, 0),
        ("A/B: four pairs 10% slower fail", [pair(1, t) for t in (1.08, 1.1, 1.12, 1.11)], False, REGRESSION),
        ("A/B: one pair across the floor of four is undecided", [pair(1, t) for t in (1.0, 1.0, 1.01, 1.07)], False, UNDECIDED),
        ("A/B: undecided at max_pairs, median above the floor: passes", [pair(1, t) for t in [1.07] * 4 + [1.0] * 8], False, 0),
        ("A/B: undecided at max_pairs, median under the floor, slower with confidence: fails",
         [pair(1, t) for t in [1.07] * 8 + [1.04] * 4], False, REGRESSION),
        ("A/B: undecided at max_pairs, median under the floor, interval reaching 1: passes",
         [pair(1, t) for t in [1.07] * 8 + [0.98] * 4], False, 0),
        ("A/B: --final decides undecided pairs", [pair(1, t) for t in (1.04, 1.07, 1.07, 1.07)], True, REGRESSION),
    ]
    for name, pairs, final, want in ab_cases:
        _, got = ab_rows(pairs, tol, final)
        ok = got == want
        bad += not ok
        print(f"selftest: {'pass' if ok else 'WRONG'}: {name} -> exit {got}")
    # Coverage by hand: n = 4, j = 1: 1 - 2/16 = 0.875; n = 10: j = 3 gives
    # 1 - 2 * (1 + 10 + 45) / 1024 = 0.891, j = 4 gives 0.656.
    ok = median_interval([4, 1, 3, 2]) == (1, 4) and median_interval(list(range(10))) == (2, 7) \
        and median_interval([1, 2, 3]) is None
    bad += not ok
    print(f"selftest: {'pass' if ok else 'WRONG'}: the median's order-statistic interval")
    print(f"{len(cases) + len(ab_cases) + 3 - bad} passed, {bad} failed")
    return 1 if bad else 0


def take_option(args, name, default, valid=lambda v: True, need="a value"):
    """Removes `name VALUE` from args and returns VALUE (default when absent);
    a missing or invalid value is exit 2 naming the flag."""
    if name not in args:
        return default
    i = args.index(name)
    if i + 1 >= len(args) or not valid(args[i + 1]):
        fail(f"{name} needs {need}")
    value = args[i + 1]
    del args[i:i + 2]
    return value


if __name__ == "__main__":
    args = sys.argv[1:]
    baseline = take_option(args, "--baseline", DEFAULT_BASELINE, need="a file")
    only = take_option(args, "--only", None, lambda v: set(v.split(",")) <= set(GROUPS),
                       need=f"a comma list of {', '.join(GROUPS)}")
    groups = tuple(only.split(",")) if only else GROUPS
    label = take_option(args, "--label", "the reference build", need="a text")
    reference_commit = take_option(args, "--reference", None, lambda v: len(v) == 40, need="a full commit hash")
    final = "--final" in args
    args = [a for a in args if a != "--final"]
    if args[:1] == ["ab"] and len(args) == 2:
        sys.exit(ab(args[1], baseline, final, label))
    if args[:1] == ["check"] and len(args) == 2:
        sys.exit(check(args[1], baseline, groups))
    if args[:1] == ["update"] and len(args) >= 2:
        sys.exit(update(args[1:], baseline, reference_commit))
    if args == ["selftest"]:
        sys.exit(selftest())
    print(__doc__, file=sys.stderr)
    sys.exit(BAD_INPUT)
