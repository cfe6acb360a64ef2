#!/usr/bin/env python3
"""CI regression gate for jsae-bench (stdlib only).

    ci/gate.py check RESULT.json [--baseline ci/baseline.json]
        Compares a `jsae-bench --json` result with the committed baseline and
        prints one table. Exit 0: no regression (improvements are reported,
        not failed); exit 3: a regression; exit 2: unusable input.
    ci/gate.py update RESULT.json [--baseline ci/baseline.json]
        Rewrites the baseline's values from RESULT (keeping its tolerances)
        and prints the diff. An explicit step, never done by `check`.
    ci/gate.py selftest
        Checks the gate on perturbed copies of a synthetic result.

Gated, with the tolerances stored in the baseline file:
  - efficiency shares (a share of the in-run sgemm ceiling, so machines of
    different speed compare): fail when value < baseline * (1 - efficiency_drop)
  - peak resident memory: fail when value > baseline * (1 + memory_growth)
  - numerical fingerprint (loss curve of the 20-step golden training run):
    fail when any |value - baseline| > fingerprint_rtol * |baseline| + fingerprint_atol
"""
import difflib
import json
import os
import sys

REGRESSION = 3
BAD_INPUT = 2
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BASELINE = os.path.join(HERE, "baseline.json")

EFFICIENCY = ("sae_efficiency", "jsae_efficiency")
MEMORY = ("sae_peak_bytes", "jsae_peak_bytes")
DEFAULT_TOLERANCES = {
    # This 2-core machine is shared: repeated ci-preset runs spread about
    # +-15% in efficiency, so a drop of more than 35% is a real slowdown.
    "efficiency_drop": 0.35,
    # Peak RSS repeats to within a few percent; 15% growth is a leak or a
    # new buffer.
    "memory_growth": 0.15,
    # The fingerprint runs in Float; OpenBLAS kernels differ slightly across
    # CPUs (summation order), observed <= 1e-6 relative over 20 steps.
    "fingerprint_rtol": 1e-4,
    "fingerprint_atol": 1e-6,
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"gate: {path}: {e}", file=sys.stderr)
        sys.exit(BAD_INPUT)


def compare(result, baseline):
    """Rows (metric, baseline, value, band, status) and whether anything regressed."""
    tol = {**DEFAULT_TOLERANCES, **baseline.get("tolerances", {})}
    if result.get("preset") != baseline.get("preset"):
        print(f"gate: result is preset {result.get('preset')!r}, baseline is {baseline.get('preset')!r}", file=sys.stderr)
        sys.exit(BAD_INPUT)
    rows, failed = [], False
    bm, rm = baseline["metrics"], result["metrics"]
    for key in EFFICIENCY:
        b, v = bm[key], rm[key]
        low = b * (1 - tol["efficiency_drop"])
        status = "FAIL" if v < low else ("improved" if v > b * (1 + tol["efficiency_drop"]) else "ok")
        failed |= status == "FAIL"
        rows.append((key, f"{100 * b:.1f}%", f"{100 * v:.1f}%", f">= {100 * low:.1f}%", status))
    for key in MEMORY:
        b, v = bm[key], rm[key]
        high = b * (1 + tol["memory_growth"])
        status = "FAIL" if v > high else ("improved" if v < b * (1 - tol["memory_growth"]) else "ok")
        failed |= status == "FAIL"
        mib = 1 << 20
        rows.append((key, f"{b / mib:.0f} MiB", f"{v / mib:.0f} MiB", f"<= {high / mib:.0f} MiB", status))
    bf, rf = baseline.get("fingerprintLoss"), result.get("fingerprintLoss")
    if bf is None:
        rows.append(("fingerprint loss curve", "none", "-", "-", "not gated"))
    elif rf is None or len(rf) != len(bf):
        failed = True
        rows.append(("fingerprint loss curve", f"{len(bf)} steps", "missing" if rf is None else f"{len(rf)} steps", "same steps", "FAIL"))
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
    return rows, failed


def table(rows):
    head = ("metric", "baseline", "value", "allowed", "status")
    widths = [max(len(str(r[c])) for r in rows + [head]) for c in range(5)]
    line = lambda r: "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), "-" * len(line(head))] + [line(r) for r in rows])


def check(result_path, baseline_path):
    rows, failed = compare(load(result_path), load(baseline_path))
    print(table(rows))
    if failed:
        print(f"gate: REGRESSION against {os.path.relpath(baseline_path)} "
              f"(update it only with: ci/bench-gate.sh --update-baseline)")
        return REGRESSION
    print("gate: no regression")
    return 0


def update(result_path, baseline_path):
    result = load(result_path)
    old_text = open(baseline_path).read() if os.path.exists(baseline_path) else ""
    old = json.loads(old_text) if old_text else {}
    new = {
        "preset": result["preset"],
        "tolerances": old.get("tolerances", DEFAULT_TOLERANCES),
        "metrics": {k: result["metrics"][k] for k in EFFICIENCY + MEMORY},
        "fingerprintLoss": result.get("fingerprintLoss"),
        "environment": result.get("environment"),
        "shape": result.get("shape"),
    }
    new_text = json.dumps(new, indent=2, sort_keys=True) + "\n"
    tmp = baseline_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new_text)
    os.replace(tmp, baseline_path)
    diff = difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                os.path.relpath(baseline_path) + " (old)", os.path.relpath(baseline_path) + " (new)")
    sys.stdout.writelines(diff)
    print(f"gate: baseline rewritten: {os.path.relpath(baseline_path)}")
    return 0


def selftest():
    base = {"preset": "ci", "tolerances": DEFAULT_TOLERANCES,
            "metrics": {"sae_efficiency": 0.4, "jsae_efficiency": 0.4, "sae_peak_bytes": 1e8, "jsae_peak_bytes": 2e8},
            "fingerprintLoss": [1.0, 0.5, 0.25]}

    def variant(**changes):
        r = json.loads(json.dumps(base))
        for k, v in changes.items():
            if k == "loss":
                r["fingerprintLoss"] = v
            else:
                r["metrics"][k] = v
        return r

    cases = [
        ("identical", variant(), False),
        ("noise within band", variant(sae_efficiency=0.3, jsae_peak_bytes=2.2e8), False),
        ("improvement is not a failure", variant(jsae_efficiency=0.9, sae_peak_bytes=5e7), False),
        ("efficiency halved", variant(jsae_efficiency=0.2), True),
        ("memory +50%", variant(jsae_peak_bytes=3e8), True),
        ("fingerprint moved 1e-3", variant(loss=[1.0, 0.5005, 0.25]), True),
        ("fingerprint shorter", variant(loss=[1.0, 0.5]), True),
    ]
    bad = 0
    for name, result, should_fail in cases:
        _, failed = compare(result, base)
        ok = failed == should_fail
        bad += not ok
        print(f"selftest: {'pass' if ok else 'WRONG'}: {name} -> {'fails' if failed else 'passes'}")
    print(f"{len(cases) - bad} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    args = sys.argv[1:]
    baseline = DEFAULT_BASELINE
    if "--baseline" in args:
        i = args.index("--baseline")
        baseline = args[i + 1]
        del args[i:i + 2]
    if args[:1] == ["check"] and len(args) == 2:
        sys.exit(check(args[1], baseline))
    if args[:1] == ["update"] and len(args) == 2:
        sys.exit(update(args[1], baseline))
    if args == ["selftest"]:
        sys.exit(selftest())
    print(__doc__, file=sys.stderr)
    sys.exit(BAD_INPUT)
