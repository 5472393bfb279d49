"""Training checkpoints: written atomically, loaded strictly, checked against the config.

``last.pth`` holds upstream's keys (``epoch``, ``model_state_dict``, ``optimizer_state_dict``,
``lr_scheduler``, ``train_losses``, ``test_losses``, ``lrs``) so MindEye tools can read it, plus
ours: ``config`` (the brain model's, to rebuild it exactly), ``train_config``, ``data``
(subjects, sessions, voxel counts), ``rng`` (to resume bit for bit), ``elapsed_s`` and
``history`` (the per-epoch log rows).
"""
from __future__ import annotations

from pathlib import Path

import torch

from fmri_recon import helpers
from fmri_recon.data import released
from fmri_recon.models import BrainConfig, MindEyeModel


class CheckpointMismatch(ValueError):
    """A checkpoint was trained with another configuration than the one asked for."""


def save(path: str | Path, state: dict) -> None:
    with helpers.atomic_output(path) as tmp:
        torch.save(state, tmp)


def read(path: str | Path) -> dict:
    """The checkpoint dict, read as any torch file is (fmri_recon.data.released: nothing is unpickled
    that the weights-only reader does not allow)."""
    return released.load(path)


def read_model_state(path: str | Path) -> dict:
    """``model_state_dict`` of a checkpoint in upstream's format (a released ``last.pth``, or ours),
    memory-mapped: nothing else of the file is read, so the optimizer state (most of a 9-10 GB
    release) never enters memory. Upstream's torch-2.1 files also hold their scheduler and
    optimizer as objects: those are left unread (fmri_recon.data.released)."""
    try:
        ckpt = released.load(path, mmap=True)
    except RuntimeError as e:       # torch's legacy (non-zip) format cannot be memory-mapped
        raise CheckpointMismatch(f"{path}: not a torch.save zip checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointMismatch(f"{path}: no model_state_dict (upstream's last.pth layout); has {keys}")
    return released.tensors(ckpt["model_state_dict"], path, "model_state_dict")


# The config value that decides the shape of each part of the model (for the message of a misfit).
_SHAPED_BY = (
    (("backbone.blin1", "backbone.bnorm", "backbone.bupsampler", "backbone.b_maps_projector"), "blurry_recon"),
    (("backbone.backbone_linear",), "hidden_dim, clip_seq_dim, clip_emb_dim"),
    (("backbone.clip_proj",), "clip_emb_dim"),
    (("backbone.mixer_blocks",), "hidden_dim, n_blocks"),
    (("ridge.",), "hidden_dim"),
    (("backbone.clip_mean",), "clip_exclude_mean"),
    (("diffusion_prior.",), "clip_seq_dim, clip_emb_dim, use_prior, prior_depth, prior_dim_head, prior_heads"),
)


def _shaped_by(key: str, cfg: BrainConfig) -> str:
    for prefixes, names in _SHAPED_BY:
        if key.startswith(prefixes):
            return ", ".join(f"{n} = {getattr(cfg, n)!r}" for n in names.split(", "))
    return "backbone"


def check_fit(model: MindEyeModel, state: dict, path, skip=lambda key: False) -> None:
    """Raise CheckpointMismatch listing the first ``misfits`` of ``state`` (from ``path``)."""
    wrong = misfits(model, state, skip)
    if wrong:
        raise CheckpointMismatch(f"{path}: does not fit the configured model: " + "; ".join(wrong[:6])
                                 + (f"; and {len(wrong) - 6} more" if len(wrong) > 6 else ""))


def misfits(model: MindEyeModel, state: dict, skip=lambda key: False) -> list[str]:
    """Each key of ``state`` that ``model`` lacks or shapes differently, and each key of the model
    that ``state`` lacks (``skip``: keys not compared), with the config values that shape it."""
    own, cfg, out = model.state_dict(), model.cfg, []
    for key in sorted(set(own) | set(state)):
        if skip(key):
            continue
        if key not in own:
            out.append(f"{key} {tuple(state[key].shape)}: not in the configured model ({_shaped_by(key, cfg)})")
        elif key not in state:
            out.append(f"{key} {tuple(own[key].shape)}: missing from the checkpoint ({_shaped_by(key, cfg)})")
        elif own[key].shape != state[key].shape:
            out.append(f"{key}: checkpoint {tuple(state[key].shape)}, configured {tuple(own[key].shape)} "
                       f"({_shaped_by(key, cfg)})")
    return out


def load_released(path: str | Path, cfg: BrainConfig, device="cpu") -> MindEyeModel:
    """A model of ``cfg`` (the experiment's) with every weight of the checkpoint ``path`` (upstream's
    layout: no config of ours is in it), loaded strictly; a misfit names each key, both shapes and
    the config values that shape it."""
    model = MindEyeModel(cfg)
    state = read_model_state(path)
    check_fit(model, state, path)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def check_config(ckpt: dict, path, **expected) -> None:
    """Raise CheckpointMismatch naming every key whose saved value differs from ``expected``."""
    diffs = []
    for section, want in expected.items():
        have = ckpt.get(section)
        if have != want:
            keys = sorted(set(have or {}) | set(want or {})) if isinstance(want, dict) else [None]
            for k in keys:
                a = have.get(k) if isinstance(have, dict) and k is not None else have
                b = want.get(k) if isinstance(want, dict) and k is not None else want
                if a != b:
                    diffs.append(f"{section}.{k}: checkpoint {a!r}, config {b!r}" if k else
                                 f"{section}: checkpoint {a!r}, config {b!r}")
    if diffs:
        raise CheckpointMismatch(f"{path}: trained with another configuration: " + "; ".join(diffs))


def load_model(path: str | Path, device="cpu") -> tuple[MindEyeModel, dict]:
    """Rebuild the model from the config saved with it and load its weights strictly."""
    ckpt = read(path)
    cfg = BrainConfig.from_dict(ckpt["config"])
    model = MindEyeModel(cfg)
    model.load_state_dict(ckpt["model_state_dict"], strict=True)
    return model.to(device).eval(), ckpt
