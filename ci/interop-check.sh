#!/usr/bin/env bash
# Reads `jsae export --format saelens` output with the Python safetensors
# package (the reference reader) and checks the tensors' names, shapes,
# dtypes and values and the cfg.json keys SAELens 6 needs, on the golden
# interop fixtures (golden/interop). Needs a built jsae (JSAE=path, default
# .build/debug/jsae) and, in a throwaway venv, `pip install safetensors
# numpy`; when the venv or the install fails (no network, no ensurepip) it
# says why and exits 0, since that says nothing about the export.
set -euo pipefail
cd "$(dirname "$0")/.."
JSAE=${JSAE:-.build/debug/jsae}
[ -x "$JSAE" ] || { echo "ci/interop-check.sh: no jsae at $JSAE: build first (swift build)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
if ! timeout 120 python3 -m venv "$work/venv" >"$work/venv.log" 2>&1; then
  echo "ci/interop-check.sh: skipped: python3 -m venv failed: $(tail -n 1 "$work/venv.log")"
  exit 0
fi
if ! timeout 120 "$work/venv/bin/pip" install --quiet --disable-pip-version-check safetensors numpy >"$work/pip.log" 2>&1; then
  echo "ci/interop-check.sh: skipped: pip install safetensors numpy failed or took over 120 s: $(tail -n 1 "$work/pip.log")"
  exit 0
fi
g=golden/interop
"$JSAE" import "$g/authors" --out "$work/authors.h5" >/dev/null
"$JSAE" import --sae-in "$g/saelens_in" --sae-out "$g/saelens_out" --mlp "$g/activations.h5" --out "$work/saelens.h5" >/dev/null
"$JSAE" export "$work/authors.h5" --format saelens --out "$work/authors" >/dev/null
"$JSAE" export "$work/saelens.h5" --format saelens --out "$work/saelens" >/dev/null
"$work/venv/bin/python" - "$work" "$g" <<'PY'
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

work, g = sys.argv[1], sys.argv[2]
failures = []

def check(cond, what):
    if not cond:
        failures.append(what)

def check_folder(folder, want, hook):
    """want: name -> expected float64 array; hook: the expected metadata.hook_name."""
    cfg = json.load(open(f"{folder}/cfg.json"))
    # SAELens 6 builds a TopK SAE from these (SAEConfig, TopKSAEConfig, SAEMetadata).
    for key, kind in (("architecture", str), ("d_in", int), ("d_sae", int), ("k", int), ("dtype", str), ("device", str),
                      ("apply_b_dec_to_input", bool), ("normalize_activations", str), ("reshape_activations", str),
                      ("metadata", dict)):
        check(isinstance(cfg.get(key), kind), f"{folder}/cfg.json: {key} missing or not {kind.__name__}")
    meta = cfg.get("metadata", {})
    for key in ("sae_lens_version", "model_name", "hook_name", "hook_head_index", "context_size", "prepend_bos", "dataset_path"):
        check(key in meta, f"{folder}/cfg.json: metadata.{key} missing")
    check(cfg.get("architecture") == "topk" and cfg.get("normalize_activations") == "none", f"{folder}: not a plain topk config")
    check(meta.get("hook_name") == hook, f"{folder}: hook_name {meta.get('hook_name')} != {hook}")
    d, m = cfg["d_in"], cfg["d_sae"]
    shapes = {"W_enc": (d, m), "b_enc": (m,), "W_dec": (m, d), "b_dec": (d,)}
    path = f"{folder}/sae_weights.safetensors"
    with safe_open(path, framework="numpy") as f:
        check(sorted(f.keys()) == sorted(shapes), f"{path}: tensors {sorted(f.keys())}")
    t = load_file(path)
    for name, shape in shapes.items():
        a = t.get(name)
        if a is None:
            continue
        check(a.shape == shape, f"{path}: {name} shape {a.shape} != {shape}")
        check(str(a.dtype) == cfg["dtype"], f"{path}: {name} dtype {a.dtype} != cfg {cfg['dtype']}")
        check(a.shape == want[name].shape and np.array_equal(a.astype(np.float64), want[name]),
              f"{path}: {name} values differ (max {np.max(np.abs(a.astype(np.float64) - want[name])) if a.shape == want[name].shape else 'shape'})")

def f64(t):
    return {n: v.astype(np.float64) for n, v in t.items()}

# The authors' pair: no b_dec subtraction, so every tensor comes back as stored.
src = f64(load_file(f"{g}/authors/sae_weights.safetensors"))
for side, suffix, hook in (("sae_in", "", "blocks.3.ln2.hook_normalized"), ("sae_out", "_out", "blocks.3.hook_mlp_out")):
    check_folder(f"{work}/authors/{side}", {n: src[f"_{n}{suffix}"] for n in ("W_enc", "b_enc", "W_dec", "b_dec")}, hook)

# SAELens with apply_b_dec_to_input: b_enc becomes b_enc - b_dec @ W_enc (float64).
for side, name, hook in (("sae_in", "saelens_in", "blocks.3.ln2.hook_normalized"), ("sae_out", "saelens_out", "blocks.3.hook_mlp_out")):
    s = f64(load_file(f"{g}/{name}/sae_weights.safetensors"))
    if json.load(open(f"{g}/{name}/cfg.json"))["apply_b_dec_to_input"]:
        folded = s["b_enc"] - s["b_dec"] @ s["W_enc"]
        got = load_file(f"{work}/saelens/{side}/sae_weights.safetensors")["b_enc"]
        check(np.allclose(got, folded, rtol=0, atol=1e-12), f"{side}: folded b_enc differs by {np.max(np.abs(got - folded))}")
        s["b_enc"] = got.astype(np.float64)   # the rest must match bit for bit
    check_folder(f"{work}/saelens/{side}", s, hook)

if failures:
    print("ci/interop-check.sh: FAILED")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("ci/interop-check.sh: 4 SAELens 6 folders read by the safetensors package: names, shapes, dtypes, values and cfg.json keys as expected")
PY
echo "ci/interop-check.sh: done in $(( $(date +%s) - start )) s"
