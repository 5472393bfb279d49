"""Converters between CLIP spaces, trained on images alone.

A brain model that predicts one CLIP space (say ViT-B-32's 49x768 tokens) cannot feed a
decoder trained on another (SDXL-unCLIP's bigG 256x1664): padding, as the seed project did,
gives out-of-distribution conditioning and chance-level images. A converter is trained by
regression on the two embeddings of the same images (no fMRI involved) and its quality on
held-out ground-truth images is reported, so the table can say how much of a result the
converter itself loses. The architecture is upstream's CLIPConverter (docs/upstream.md §3.3): a linear
map over the token axis, then one over the feature axis.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
from fmri_recon import helpers
from fmri_recon.data import released

log = logging.getLogger(__name__)


class TokenConverter(nn.Module):
    """(B, S_in, E_in) -> (B, S_out, E_out): Linear over tokens, then Linear over features."""

    def __init__(self, s_in: int, e_in: int, s_out: int, e_out: int):
        super().__init__()
        self.shape = {"s_in": s_in, "e_in": e_in, "s_out": s_out, "e_out": e_out}
        self.tokens = nn.Linear(s_in, s_out)
        self.features = nn.Linear(e_in, e_out)

    def forward(self, x):
        if tuple(x.shape[1:]) != (self.shape["s_in"], self.shape["e_in"]):
            raise ValueError(f"converter expects tokens ({self.shape['s_in']}, {self.shape['e_in']}), "
                             f"got {tuple(x.shape[1:])}")
        return self.features(self.tokens(x.transpose(1, 2)).transpose(1, 2))


def quality(pred: torch.Tensor, true: torch.Tensor) -> dict:
    """How close converted embeddings are to the true ones of the same (held-out) images."""
    p, t = pred.flatten(1).float(), true.flatten(1).float()
    cos = torch.nn.functional.cosine_similarity(p, t).mean()
    r2 = 1 - ((p - t) ** 2).sum() / ((t - t.mean(0)) ** 2).sum()
    pn, tn = torch.nn.functional.normalize(p, dim=1), torch.nn.functional.normalize(t, dim=1)
    top1 = ((tn @ pn.T).argmax(1) == torch.arange(len(t))).float().mean()
    return {"cosine": float(cos), "r2": float(r2), "identification_top1": float(top1), "n_images": len(t)}


def fit(x: np.ndarray, y: np.ndarray, held_out: np.ndarray, *, epochs: int, lr: float,
        batch_size: int, seed: int = 0, device="cpu") -> tuple[TokenConverter, dict]:
    """Regress ``y`` (N,S',E') on ``x`` (N,S,E); ``held_out`` (bool N) marks images kept for the report.

    MSE plus a cosine term on the flattened tokens (what downstream consumers compare).
    """
    torch.manual_seed(seed)
    xs, ys = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.float32))
    train_idx = np.flatnonzero(~held_out)
    if len(train_idx) == 0:
        raise ValueError("converter: no training images (all held out)")
    model = TokenConverter(xs.shape[1], xs.shape[2], ys.shape[1], ys.shape[2]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    scale = ys[train_idx].std()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(train_idx)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            pred = model(xs[idx].to(device))
            true = ys[idx].to(device)
            loss = ((pred - true) ** 2).mean() / scale ** 2 + (1 - torch.nn.functional.cosine_similarity(
                pred.flatten(1), true.flatten(1)).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        report = {"train": quality(model(xs[train_idx].to(device)).cpu(), ys[train_idx]),
                  "held_out": quality(model(xs[held_out].to(device)).cpu(), ys[held_out]) if held_out.any() else None}
    log.info("converter %s -> %s: %s", tuple(xs.shape[1:]), tuple(ys.shape[1:]), report)
    return model.cpu(), report


def save(model: TokenConverter, path, report: dict) -> None:

    with helpers.atomic_output(path) as tmp:
        torch.save({"shape": model.shape, "state_dict": model.state_dict(), "report": report}, tmp)


# Upstream's CLIPConverter (recon_inference.ipynb) names its two layers linear1 (over tokens) and
# linear2 (over features); its file (bigG_to_L_epoch8.pth) holds {'model_state_dict': ...}.
UPSTREAM_KEYS = {"linear1.weight": "tokens.weight", "linear1.bias": "tokens.bias",
                 "linear2.weight": "features.weight", "linear2.bias": "features.bias"}


def load(path, device="cpu") -> TokenConverter:
    """A converter file: ours (written by ``save``) or upstream's released one, loaded strictly."""

    ckpt = released.load(path)
    if "model_state_dict" in ckpt:     # upstream's, beside its optimizer and torch-2.1 scheduler
        state = released.tensors(ckpt["model_state_dict"], path, "model_state_dict")
        return load_upstream(path, state).to(device).eval()
    model = TokenConverter(**ckpt["shape"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.to(device).eval()


def load_upstream(path, state: dict) -> TokenConverter:
    """Upstream's CLIPConverter state dict (keys ``linear1.*``, ``linear2.*``) as a TokenConverter:
    the same computation (a Linear over the token axis, then one over the features)."""
    if set(state) != set(UPSTREAM_KEYS):
        raise ValueError(f"{path}: expected upstream's CLIPConverter keys {sorted(UPSTREAM_KEYS)}, "
                         f"found {sorted(state)}")
    (s_out, s_in), (e_out, e_in) = state["linear1.weight"].shape, state["linear2.weight"].shape
    model = TokenConverter(s_in, e_in, s_out, e_out)
    model.load_state_dict({UPSTREAM_KEYS[k]: v.float() for k, v in state.items()}, strict=True)
    log.info("%s: upstream's converter, tokens (%d, %d) -> (%d, %d)", path, s_in, e_in, s_out, e_out)
    return model
