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

from . import helpers
from .models import BrainConfig, MindEyeModel


class CheckpointMismatch(ValueError):
    """A checkpoint was trained with another configuration than the one asked for."""


def save(path: str | Path, state: dict) -> None:
    with helpers.atomic_output(path) as tmp:
        torch.save(state, tmp)


def read(path: str | Path) -> dict:
    """The checkpoint dict (trusted file written by this project: full unpickling)."""
    return torch.load(helpers.need(Path(path)), map_location="cpu", weights_only=False)


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
