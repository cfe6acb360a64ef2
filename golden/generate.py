#!/usr/bin/env python3
"""Independent PyTorch (float64) reference for the jsae-harness golden files.

Written from docs/jsae-spec.md and docs/file-format.md, not from the
Swift code. The Jacobian is computed with autograd (torch.func.jacrev) on the
chain s -> x(s) -> f -> output-SAE pre-activations on K2, never through the
wd1/w2e factorisation the Swift code uses.

Gradients of the training loss come from loss.backward() through that
autograd Jacobian (create_graph=True), and the training run uses torch's own
Adam, clip_grad_norm_ and LinearLR/SequentialLR schedulers.

Usage:  python golden/generate.py            (writes golden/<case>/*.h5 and golden/train/*.h5)
Needs:  torch, h5py, numpy (golden/requirements.txt)

Bump GOLDEN_VERSION whenever the content or layout of the files changes, and
bump the matching constant in Tests/JSAEIOTests/GoldenTests.swift.
"""
import math
import os
import sys

import h5py
import numpy as np
import torch
from torch.func import jacrev

GOLDEN_VERSION = 2
HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_default_dtype(torch.float64)


# ---------------------------------------------------------------- the maths

def gelu(z, activation):
    if activation == "gelu":
        return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))
    if activation == "gelu_tanh":
        return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))
    raise ValueError(activation)


def mlp(x, p, activation):
    """y = act(x @ W_in + b_in) @ W_out + b_out (row vectors)."""
    return gelu(x @ p["W_in"] + p["b_in"], activation) @ p["W_out"] + p["b_out"]


def topk_rule(h, k):
    """Indices of the k largest h per row, descending; ties -> lower index first.

    A stable sort on -h keeps equal values in ascending index order, which is
    the harness's documented tie rule (torch.topk documents no tie order).
    """
    order = torch.sort(-h, dim=-1, stable=True).indices
    return order[..., :k]


def sae_encode(x, sae, k):
    h = x @ sae["W_enc"] + sae["b_enc"]          # no b_dec subtraction
    idx = topk_rule(h, k)                          # TopK on RAW pre-activations
    vals = torch.relu(torch.gather(h, -1, idx))    # ReLU after selection
    return idx, vals


def sae_decode(idx, vals, sae):
    m = sae["W_dec"].shape[0]
    s = torch.zeros(idx.shape[0], m).scatter(-1, idx, vals)
    return s @ sae["W_dec"] + sae["b_dec"]


def jacobian_autograd(x_b, s_b, idx1, idx2, sae_in, sae_out, p, activation, point):
    """k x k Jacobian for one token via autograd; rows K2 order, cols K1 order.

    trueInput:       x(s) = x + (s - s_x) @ W_dec_x[K1]   (SAE error held fixed)
    reconstruction:  x(s) = s @ W_dec_x[K1] + b_dec_x
    Index sets frozen; the post-TopK ReLU ignored.
    """
    Wd = sae_in["W_dec"][idx1]                     # [k, d]

    def out_preacts(s):
        if point == "trueInput":
            xs = x_b + (s - s_b) @ Wd
        else:
            xs = s @ Wd + sae_in["b_dec"]
        y = mlp(xs, p, activation)
        h = y @ sae_out["W_enc"] + sae_out["b_enc"]
        return h[idx2]

    return jacrev(out_preacts)(s_b)


def forward(x, model, point, lam):
    k, act = model["k"], model["activation"]
    sae_in, sae_out, p = model["sae_in"], model["sae_out"], model["mlp"]
    idx1, v1 = sae_encode(x, sae_in, k)
    x_hat = sae_decode(idx1, v1, sae_in)
    x_eval = x if point == "trueInput" else x_hat
    y = mlp(x_eval, p, act)
    idx2, v2 = sae_encode(y, sae_out, k)
    y_hat = sae_decode(idx2, v2, sae_out)
    J = torch.stack([
        jacobian_autograd(x[b], v1[b], idx1[b], idx2[b], sae_in, sae_out, p, act, point)
        for b in range(x.shape[0])
    ])
    T, d = x.shape
    mse_in = ((x_hat - x) ** 2).mean().item()
    mse_out = ((y_hat - y) ** 2).mean().item()
    jac_l1 = J.abs().sum().item() / (T * k * k)
    return dict(idx1=idx1, v1=v1, x_hat=x_hat, idx2=idx2, v2=v2, y=y, y_hat=y_hat, J=J,
                mse_in=mse_in, mse_out=mse_out, jacobian_l1=jac_l1,
                loss=mse_in + mse_out + lam * jac_l1)


SAE_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def training_loss(x, model, lam):
    """The reference code's objective at the true input, differentiable in
    both SAEs' parameters (the MLP is frozen: its tensors need no grad).

    The Jacobian is built by autograd with create_graph=True, so backward
    reaches exactly what the chain depends on; s_x is a constant (detached)
    evaluation point, and x(s) = x + (s - s_x) @ W_dec_x[K1].
    """
    k, act = model["k"], model["activation"]
    sae_in, sae_out, p = model["sae_in"], model["sae_out"], model["mlp"]
    T, d = x.shape
    idx1, v1 = sae_encode(x, sae_in, k)
    x_hat = sae_decode(idx1, v1, sae_in)
    mse_in = ((x_hat - x) ** 2).mean()
    if sae_out is None:
        return mse_in, dict(mse_in=mse_in.item(), mse_out=0.0, jacobian_l1=0.0, loss=mse_in.item())
    y = mlp(x, p, act)
    idx2, v2 = sae_encode(y, sae_out, k)
    y_hat = sae_decode(idx2, v2, sae_out)
    mse_out = ((y_hat - y) ** 2).mean()
    jac_sum = x.new_zeros(())
    for b in range(T):
        s_b = v1[b].detach()
        Wd = sae_in["W_dec"][idx1[b]]

        def out_preacts(s):
            h = mlp(x[b] + (s - s_b) @ Wd, p, act) @ sae_out["W_enc"] + sae_out["b_enc"]
            return h[idx2[b]]

        J = torch.autograd.functional.jacobian(out_preacts, s_b, create_graph=True)
        jac_sum = jac_sum + J.abs().sum()
    jac = jac_sum / (T * k * k)
    loss = mse_in + mse_out + lam * jac
    return loss, dict(mse_in=mse_in.item(), mse_out=mse_out.item(), jacobian_l1=jac.item(), loss=loss.item())


def sae_params(model):
    groups = ["sae_in"] + (["sae_out"] if model["sae_out"] is not None else [])
    return [(g, n, model[g][n]) for g in groups for n in SAE_NAMES]


def gradients(x, model, lam):
    for _, _, t in sae_params(model):
        t.requires_grad_(True)
        t.grad = None
    loss, _ = training_loss(x, model, lam)
    loss.backward()
    grads = {f"{g}/{n}": t.grad.detach().clone() for g, n, t in sae_params(model)}
    for _, _, t in sae_params(model):
        t.requires_grad_(False)
        t.grad = None
    return grads


# ---------------------------------------------------------------- the cases

def random_sae(g, d, m, enc_bias_shift=0.0):
    W_dec = torch.randn(m, d, generator=g) / math.sqrt(d)
    return {
        "W_enc": torch.randn(d, m, generator=g) / math.sqrt(d),
        "b_enc": 0.1 * torch.randn(m, generator=g) + enc_bias_shift,
        "W_dec": W_dec,
        "b_dec": 0.1 * torch.randn(d, generator=g),
    }


def random_mlp(g, d, h):
    return {
        "W_in": torch.randn(d, h, generator=g) / math.sqrt(d),
        "b_in": 0.1 * torch.randn(h, generator=g),
        "W_out": torch.randn(h, d, generator=g) / math.sqrt(h),
        "b_out": 0.1 * torch.randn(d, generator=g),
    }


CASES = {
    # name: (seed, d, d_mlp, m_in, m_out, k, T, activation, x dtype on disk, lambda, note)
    "basic":   (1, 6, 10, 16, 12, 3, 7, "gelu", "float64", 0.7,
                "d != d_mlp != m, exact-erf GELU"),
    "tanh_k1": (2, 5, 8, 9, 11, 1, 6, "gelu_tanh", "float16", 1.0,
                "k = 1, tanh GELU, activations stored as float16"),
    "k_eq_m":  (3, 4, 7, 5, 5, 5, 5, "gelu", "float32", 0.5,
                "k = m: every latent selected, some clamped to 0 by the ReLU"),
    "ties":    (4, 4, 6, 8, 8, 3, 4, "gelu", "float64", 1.0,
                "duplicated encoder columns: exact ties in pre-activations"),
}


def make_case(name):
    seed, d, h, m_in, m_out, k, T, act, xdtype, lam, note = CASES[name]
    g = torch.Generator().manual_seed(seed)
    sae_in = random_sae(g, d, m_in, enc_bias_shift=-0.2 if name == "k_eq_m" else 0.0)
    sae_out = random_sae(g, d, m_out)
    if name == "ties":
        # Latents 5 and 2 (and 7 and 1) get identical encoder columns and
        # biases, so their pre-activations tie exactly on every token.
        for a, b in ((5, 2), (7, 1)):
            for sae in (sae_in, sae_out):
                sae["W_enc"][:, a] = sae["W_enc"][:, b]
                sae["b_enc"][a] = sae["b_enc"][b]
    model = {"k": k, "activation": act, "sae_in": sae_in, "sae_out": sae_out,
             "mlp": random_mlp(g, d, h)}
    x = torch.randn(T, d, generator=g)
    # What the Swift side reads: the on-disk dtype, converted back to float64.
    x = torch.from_numpy(x.numpy().astype(xdtype).astype(np.float64))
    return model, x, xdtype, lam, note


# ---------------------------------------------------------------- the files

def stamp(f, kind, note):
    f.attrs["format_version"] = 1
    f.attrs["kind"] = kind
    f.attrs["golden_version"] = GOLDEN_VERSION
    f.attrs["generator"] = "golden/generate.py"
    f.attrs["torch_version"] = str(torch.__version__)
    f.attrs["h5py_version"] = h5py.__version__
    f.attrs["note"] = note


def write_tensors(f, group, tensors):
    for key, v in tensors.items():
        f.create_dataset(f"{group}/{key}", data=v.detach().numpy())


def write_atomically(path, fill):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        fill(f)
    os.replace(tmp, path)


def write_case(name):
    model, x, xdtype, lam, note = make_case(name)
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)

    def model_file(f):
        stamp(f, "model", note)
        f.attrs["k"] = model["k"]
        f.attrs["activation"] = model["activation"]
        for grp in ("sae_in", "sae_out", "mlp"):
            write_tensors(f, grp, model[grp])
    write_atomically(os.path.join(out, "model.h5"), model_file)

    def acts_file(f):
        stamp(f, "activations", note)
        f.create_dataset("x", data=x.numpy().astype(xdtype))
        f.create_dataset("y", data=mlp(x, model["mlp"], model["activation"]).numpy())
        for key, val in (("source_model", "random (golden)"), ("layer", 0), ("hook_in", "x"),
                         ("hook_out", "y"), ("text_source", "none: N(0, 1) samples")):
            f.attrs[key] = val
        f.attrs["tokens"] = x.shape[0]
    write_atomically(os.path.join(out, "activations.h5"), acts_file)

    for point in ("trueInput", "reconstruction"):
        r = forward(x, model, point, lam)

        def fwd_file(f):
            stamp(f, "forward", note)
            f.create_dataset("sae_in/indices", data=r["idx1"].numpy().astype(np.int64))
            f.create_dataset("sae_in/values", data=r["v1"].numpy())
            f.create_dataset("x_hat", data=r["x_hat"].numpy())
            f.create_dataset("sae_out/indices", data=r["idx2"].numpy().astype(np.int64))
            f.create_dataset("sae_out/values", data=r["v2"].numpy())
            f.create_dataset("y", data=r["y"].numpy())
            f.create_dataset("y_hat", data=r["y_hat"].numpy())
            f.create_dataset("jacobian", data=r["J"].detach().numpy())
            f.attrs["evaluation_point"] = point
            f.attrs["lambda"] = lam
            for key in ("mse_in", "mse_out", "jacobian_l1", "loss"):
                f.attrs[key] = r[key]
            if point == "trueInput":
                # Gradient of the training loss (defined at the true input).
                for name, g in gradients(x, model, lam).items():
                    f.create_dataset(f"grad/{name}", data=g.numpy())
        write_atomically(os.path.join(out, f"forward.{point}.h5"), fwd_file)
    print(f"wrote golden/{name}/ ({note})")


# ---------------------------------------------------------------- training run

TRAIN = dict(seed=7, steps=20, batch=8, d=6, d_mlp=10, expansion=2, k=3, lam=2.0, lr=0.01,
             lr_warmup_fraction=0.15, lr_decay_fraction=0.2, lambda_warmup_fraction=0.25,
             clip_norm=1.0, activation="gelu", x_scale=0.6)


def fraction_steps(f, total):
    return int(f * total + 1e-9)


def sae_lens_scheduler(opt, total, warm, decay):
    """SAELens 4.0.9 get_lr_scheduler('constant', ...) with lr_end = lr."""
    scheds, milestones = [], []
    if warm > 0:
        scheds.append(torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warm, end_factor=1.0,
                                                        total_iters=warm - 1))
        milestones.append(warm)
    scheds.append(torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda _: 1.0))
    if decay > 0:
        scheds.append(torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=decay))
        milestones.append(total - decay)
    return torch.optim.lr_scheduler.SequentialLR(opt, schedulers=scheds, milestones=milestones)


def kaiming_sae(g, d, m):
    W_dec = torch.empty(m, d)
    torch.nn.init.kaiming_uniform_(W_dec, generator=g)   # bound sqrt(6 / fan_in), fan_in = d
    return {"W_enc": W_dec.T.clone(), "b_enc": torch.zeros(m), "W_dec": W_dec, "b_dec": torch.zeros(d)}


def write_training_run():
    c = TRAIN
    g = torch.Generator().manual_seed(c["seed"])
    d, m, k = c["d"], c["expansion"] * c["d"], c["k"]
    model = {"k": k, "activation": c["activation"], "sae_in": kaiming_sae(g, d, m),
             "sae_out": kaiming_sae(g, d, m), "mlp": random_mlp(g, d, c["d_mlp"])}
    x_all = c["x_scale"] * torch.randn(c["steps"] * c["batch"], d, generator=g)
    out = os.path.join(HERE, "train")
    os.makedirs(out, exist_ok=True)
    note = "20-step training run: LR warm-up, constant, decay; lambda warm-up; clipping"

    def model_file(f, kind, mdl):
        stamp(f, kind, note)
        f.attrs["k"] = k
        f.attrs["activation"] = c["activation"]
        for grp in ("sae_in", "sae_out", "mlp"):
            write_tensors(f, grp, mdl[grp])
    write_atomically(os.path.join(out, "initial.h5"), lambda f: model_file(f, "model", model))

    def acts_file(f):
        stamp(f, "activations", note)
        f.create_dataset("x", data=x_all.numpy())
        write_tensors(f, "mlp", model["mlp"])
        f.attrs["activation"] = c["activation"]
        for key, val in (("source_model", "random (golden)"), ("layer", 0), ("hook_in", "x"),
                         ("hook_out", "y"), ("text_source", f"none: N(0, {c['x_scale']}^2) samples")):
            f.attrs[key] = val
        f.attrs["tokens"] = x_all.shape[0]
    write_atomically(os.path.join(out, "activations.h5"), acts_file)

    params = [t for _, _, t in sae_params(model)]
    for t in params:
        t.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=c["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    total = c["steps"]
    warm = fraction_steps(c["lr_warmup_fraction"], total)
    decay = fraction_steps(c["lr_decay_fraction"], total)
    lam_warm = fraction_steps(c["lambda_warmup_fraction"], total)
    sched = sae_lens_scheduler(opt, total, warm, decay)
    curve = {key: [] for key in ("loss", "mse_in", "mse_out", "jacobian_l1", "lr", "lambda", "grad_norm")}
    for t in range(total):
        with torch.no_grad():
            for grp in ("sae_in", "sae_out"):
                W = model[grp]["W_dec"]
                W /= W.norm(dim=1, keepdim=True)
        lam_t = c["lam"] * min(t, lam_warm) / lam_warm
        x = x_all[t * c["batch"]:(t + 1) * c["batch"]]
        opt.zero_grad()
        loss, parts = training_loss(x, model, lam_t)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, c["clip_norm"]).item()
        curve["lr"].append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        for key in ("loss", "mse_in", "mse_out", "jacobian_l1"):
            curve[key].append(parts[key])
        curve["lambda"].append(lam_t)
        curve["grad_norm"].append(gn)
    assert any(n > c["clip_norm"] for n in curve["grad_norm"]), "clipping never active: raise x_scale"
    assert curve["lr"][0] < curve["lr"][warm] and curve["lr"][-1] < curve["lr"][warm], "schedule phases missing"

    def final_file(f):
        model_file(f, "checkpoint", model)
        for grp in ("sae_in", "sae_out"):
            for n in SAE_NAMES:
                st = opt.state[model[grp][n]]
                f.create_dataset(f"optimizer/{grp}/{n}/m", data=st["exp_avg"].numpy())
                f.create_dataset(f"optimizer/{grp}/{n}/v", data=st["exp_avg_sq"].numpy())
        f.attrs["step"] = total
        f.attrs["total_steps"] = total
        f.attrs["seed"] = c["seed"]
        f.attrs["lr"] = c["lr"]
        f.attrs["lambda"] = c["lam"]
        f.attrs["lr_warmup_fraction"] = c["lr_warmup_fraction"]
        f.attrs["lr_decay_fraction"] = c["lr_decay_fraction"]
        f.attrs["lambda_warmup_fraction"] = c["lambda_warmup_fraction"]
        f.attrs["batch"] = c["batch"]
        f.attrs["evaluation_point"] = "trueInput"
        f.attrs["clip_norm"] = c["clip_norm"]
        for key, vals in curve.items():
            f.create_dataset(f"golden/curve/{key}", data=np.array(vals))
    with torch.no_grad():
        write_atomically(os.path.join(out, "final.h5"), final_file)
    clipped = sum(n > c["clip_norm"] for n in curve["grad_norm"])
    print(f"wrote golden/train/ ({total} steps, warm-up {warm}, decay {decay}, lambda warm-up {lam_warm}, "
          f"clipped on {clipped} steps, loss {curve['loss'][0]:.4f} -> {curve['loss'][-1]:.4f})")


if __name__ == "__main__":
    for case in (sys.argv[1:] or list(CASES) + ["train"]):
        if case == "train":
            write_training_run()
        else:
            write_case(case)
