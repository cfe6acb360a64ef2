#!/usr/bin/env python3
"""Fixtures for `jsae import` / `jsae export`: SAE folders in the
formats other people train with, an activations file with the MLP, and the
float64 Jacobians the imported pairs must give.

Independent of the Swift code: written from docs/jsae-spec.md ("Forward
pass", "The Jacobian") and from the formats' own code, with numpy and the
`safetensors` package only (h5py for the HDF5 files).

The formats, as their code writes them:
- The authors' pair (jugard99/jacobian-saes at b73cadb): sae_pair.py
  lines 259-281 (get/set_W_enc etc.: the output SAE's tensors are
  `_W_enc_out`, `_b_enc_out`, `_W_dec_out`, `_b_dec_out`), 283-334
  (initialize_weights_basic: W_enc [d_in, d_sae], b_enc [d_sae],
  W_dec [d_sae, d_in], b_dec [d_in]), 562-572 (process_sae_in: x - b_dec
  when apply_b_dec_to_input), 628-644 (save_model: state_dict() to
  sae_weights.safetensors, cfg.json); training/training_sae_pair.py lines
  243-245 (the MLP copied into `self.mlp`, a TransformerLens MLP: state-dict
  names mlp.W_in [d_model, d_mlp], mlp.b_in, mlp.W_out [d_mlp, d_model],
  mlp.b_out); sae_training_runner.py lines 226-231 (sparsity.safetensors
  holds `sparsity` and, for a pair, `sparsity2`).
- SAELens 6: cfg.json with architecture "topk", k, metadata {...};
  W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec; the encoder
  subtracts b_dec from its input when apply_b_dec_to_input. Before 6 the
  config was flat: activation_fn "topk", activation_fn_kwargs {"k": k}.
- sparsify (EleutherAI): cfg.json {activation, k, num_latents, d_in, ...};
  sae.safetensors encoder.weight [num_latents, d_in], encoder.bias, W_dec
  [num_latents, d_in], b_dec; the encoder always subtracts b_dec first.

Every such b_dec subtraction is folded into the harness's encoder bias:
h = (x - b_dec) @ W_enc + b_enc = x @ W_enc + (b_enc - b_dec @ W_enc).

Usage:  python3 golden/interop.py   (writes golden/interop/; needs numpy, h5py, safetensors)
"""
import json
import math
import os
import shutil

import h5py
import numpy as np
from safetensors.numpy import save_file

INTEROP_VERSION = 1  # and the constant in Tests/CLITests/InteropCLITests.swift
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "interop")
D, D_SAE, D_MLP, K, T = 8, 16, 12, 4, 6
LAYER, MODEL = 3, "pythia-70m-deduped"
HOOK_IN, HOOK_OUT = f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out"
# The smallest gap, in float64, between consecutive sorted pre-activations
# among each token's k+1 largest: far above float32 rounding (~1e-6 here),
# so a float32 pipeline selects and orders the same latents.
MIN_GAP = 1e-2

rng = np.random.default_rng(19)


def f32(shape, scale):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- the maths (float64)

def gelu_prime(z):
    """d/dz of the exact gelu z * Phi(z): Phi(z) + z * phi(z)."""
    erf = np.vectorize(math.erf)
    return 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def gelu(z):
    erf = np.vectorize(math.erf)
    return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))


def topk_desc(h, k):
    """The k largest per row, descending; ties to the lower index (stable sort)."""
    return np.argsort(-h, axis=-1, kind="stable")[:, :k]


def min_gap(h, k):
    s = -np.sort(-h, axis=-1)[:, :k + 1]
    return float(np.min(s[:, :-1] - s[:, 1:]))


def harness_sae(W_enc, b_enc, W_dec, b_dec, subtract_b_dec):
    """The harness's form of an SAE (float64), the b_dec subtraction folded in."""
    W_enc, b_enc, W_dec, b_dec = (np.asarray(a, dtype=np.float64) for a in (W_enc, b_enc, W_dec, b_dec))
    if subtract_b_dec:
        b_enc = b_enc - b_dec @ W_enc
    return {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}


def jacobian(x, sae_in, sae_out, mlp):
    """J[b, q, p] at the true input: rows the output SAE's top-k (descending
    pre-activation), columns the input SAE's. TopK on raw pre-activations,
    ReLU after selection; the ReLU does not enter J."""
    W_in, b_in, W_out, b_out = (np.asarray(mlp[n], dtype=np.float64) for n in ("W_in", "b_in", "W_out", "b_out"))
    z = x @ W_in + b_in
    y = gelu(z) @ W_out + b_out
    h1 = x @ sae_in["W_enc"] + sae_in["b_enc"]
    h2 = y @ sae_out["W_enc"] + sae_out["b_enc"]
    K1, K2 = topk_desc(h1, K), topk_desc(h2, K)
    phi = gelu_prime(z)
    J = np.empty((x.shape[0], K, K))
    for b in range(x.shape[0]):
        left = sae_in["W_dec"][K1[b]] @ W_in * phi[b]          # [k1, d_mlp]
        right = W_out @ sae_out["W_enc"][:, K2[b]]             # [d_mlp, k2]
        J[b] = (left @ right).T                                # [k2, k1]
    return J, K1, K2, min(min_gap(h1, K), min_gap(h2, K))


# ---------------------------------------------------------------- the fixtures

def random_sae():
    return {"W_enc": f32((D, D_SAE), 1 / math.sqrt(D)), "b_enc": f32((D_SAE,), 0.1),
            "W_dec": f32((D_SAE, D), 1 / math.sqrt(D_SAE)), "b_dec": f32((D,), 0.3)}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def saelens6_cfg(apply_b_dec):
    return {"architecture": "topk", "d_in": D, "d_sae": D_SAE, "k": K, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", "reshape_activations": "none",
            "rescale_acts_by_decoder_norm": False,
            "metadata": {"sae_lens_version": "6.5.1", "model_name": MODEL, "hook_name": HOOK_OUT if apply_b_dec else HOOK_IN,
                         "hook_head_index": None, "context_size": 128, "prepend_bos": True,
                         "dataset_path": "monology/pile-uncopyrighted"}}


def sparsify_cfg():
    return {"activation": "topk", "k": K, "num_latents": D_SAE, "expansion_factor": D_SAE // D, "normalize_decoder": True,
            "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": D}


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    mlp = {"W_in": f32((D, D_MLP), 1 / math.sqrt(D)), "b_in": f32((D_MLP,), 0.2),
           "W_out": f32((D_MLP, D), 1 / math.sqrt(D_MLP)), "b_out": f32((D,), 0.1)}
    saes = {name: random_sae() for name in ("authors_in", "authors_out", "saelens_in", "saelens_out",
                                            "pre6_in", "sparsify_in", "sparsify_out")}
    # sparsify_out is stored as float16: round it now so that the values the
    # Jacobian is computed from are the stored ones.
    saes["sparsify_out"] = {n: a.astype(np.float16).astype(np.float32) for n, a in saes["sparsify_out"].items()}

    # The pairs: (input folder, output folder, whether each subtracts b_dec).
    pairs = {
        "authors": (saes["authors_in"], False, saes["authors_out"], False),
        "saelens": (saes["saelens_in"], False, saes["saelens_out"], True),
        "sparsify": (saes["sparsify_in"], True, saes["sparsify_out"], True),
        "mixed": (saes["pre6_in"], True, saes["saelens_out"], True),
    }
    harness = {p: (harness_sae(**a, subtract_b_dec=ai), harness_sae(**b, subtract_b_dec=bi))
               for p, (a, ai, b, bi) in pairs.items()}

    # Tokens whose top-k sets are clear in every pair (see MIN_GAP).
    rows = []
    while len(rows) < T:
        x = f32((1, D), 1.0).astype(np.float64)
        if all(jacobian(x, si, so, mlp)[3] > MIN_GAP for si, so in harness.values()):
            rows.append(x[0])
    x = np.stack(rows)

    # The authors' pair folder.
    a = os.path.join(OUT, "authors")
    os.makedirs(a)
    write_json(os.path.join(a, "cfg.json"), {
        "architecture": "standard", "d_in": D, "d_sae": D_SAE, "activation_fn": "topk", "activation_fn_kwargs": {"k": K},
        "use_jacobian_loss": True, "apply_b_dec_to_input": False, "normalize_activations": "none",
        "model_name": MODEL, "hook_name": HOOK_IN, "hook_layer": LAYER, "hook_head_index": None, "dtype": "float32",
        "device": "cpu", "context_size": 128, "jacobian_coefficient": 1.0, "randomize_llm_weights": False,
        "prepend_bos": True, "dataset_path": "monology/pile-uncopyrighted", "finetuning_scaling_factor": False})
    weights = {}
    for suffix, sae in (("", saes["authors_in"]), ("_out", saes["authors_out"])):
        for n, v in sae.items():
            weights[f"_{n}{suffix}"] = v
    for n, v in mlp.items():
        weights[f"mlp.{n}"] = v
    save_file(weights, os.path.join(a, "sae_weights.safetensors"))
    save_file({"sparsity": np.full(D_SAE, -2.5, np.float32), "sparsity2": np.full(D_SAE, -3.0, np.float32)},
              os.path.join(a, "sparsity.safetensors"))

    # SAELens 6 (with and without apply_b_dec_to_input) and pre-6.
    for name, apply in (("saelens_in", False), ("saelens_out", True)):
        folder = os.path.join(OUT, name)
        os.makedirs(folder)
        write_json(os.path.join(folder, "cfg.json"), saelens6_cfg(apply))
        save_file(saes[name], os.path.join(folder, "sae_weights.safetensors"))
    folder = os.path.join(OUT, "saelens_pre6")
    os.makedirs(folder)
    write_json(os.path.join(folder, "cfg.json"), {
        "architecture": "standard", "d_in": D, "d_sae": D_SAE, "activation_fn": "topk", "activation_fn_kwargs": {"k": K},
        "apply_b_dec_to_input": True, "finetuning_scaling_factor": False, "context_size": 128, "model_name": MODEL,
        "hook_name": HOOK_IN, "hook_layer": LAYER, "hook_head_index": None, "prepend_bos": True,
        "dataset_path": "monology/pile-uncopyrighted", "normalize_activations": "none", "dtype": "float32",
        "device": "cpu", "sae_lens_training_version": "5.9.1"})
    save_file(saes["pre6_in"], os.path.join(folder, "sae_weights.safetensors"))

    # sparsify: the encoder is an nn.Linear, weight [num_latents, d_in].
    for name, dtype in (("sparsify_in", np.float32), ("sparsify_out", np.float16)):
        folder = os.path.join(OUT, name)
        os.makedirs(folder)
        write_json(os.path.join(folder, "cfg.json"), sparsify_cfg())
        s = saes[name]
        save_file({"encoder.weight": np.ascontiguousarray(s["W_enc"].T).astype(dtype), "encoder.bias": s["b_enc"].astype(dtype),
                   "W_dec": s["W_dec"].astype(dtype), "b_dec": s["b_dec"].astype(dtype)},
                  os.path.join(folder, "sae.safetensors"))

    # The activations file (file-format.md, kind = activations) with the MLP.
    with h5py.File(os.path.join(OUT, "activations.h5"), "w") as f:
        f.attrs["format_version"] = 1
        f.attrs["kind"] = "activations"
        f.attrs["tokens"] = T
        f.attrs["activation"] = "gelu"
        f.attrs["source_model"] = MODEL
        f.attrs["layer"] = LAYER
        f.attrs["hook_in"] = HOOK_IN
        f.attrs["hook_out"] = HOOK_OUT
        f.create_dataset("x", data=x.astype(np.float32))
        for n, v in mlp.items():
            f.create_dataset(f"mlp/{n}", data=v)

    # The expected Jacobians.
    with h5py.File(os.path.join(OUT, "expected.h5"), "w") as f:
        f.attrs["interop_version"] = INTEROP_VERSION
        f.attrs["generator"] = "golden/interop.py"
        f.attrs["numpy_version"] = np.__version__
        f.attrs["note"] = "J[b, q, p] at the true input, float64; rows sae_out top-k, columns sae_in top-k, descending"
        for p, (si, so) in harness.items():
            J, K1, K2, gap = jacobian(x, si, so, mlp)
            g = f.create_group(p)
            g.create_dataset("jacobian", data=J)
            g.create_dataset("in_indices", data=K1.astype(np.int64))
            g.create_dataset("out_indices", data=K2.astype(np.int64))
            g.create_dataset("b_enc_in", data=si["b_enc"])
            g.create_dataset("b_enc_out", data=so["b_enc"])
            g.attrs["min_gap"] = gap
    total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(OUT) for n in ns)
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    main()
