"""The new volumes of ``predict`` -> the voxels the model reads: masked in the model's voxel order,
z-scored as its training data were (or per session), grouped by image.

The file it writes: fmri_recon.predict.prepared.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_recon.data import normalise, own_input, preprocess
from fmri_recon.helpers import DataError
from fmri_recon.predict import prepared


def prepare(settings: dict, out: str | Path, *, zscore: str, zscore_file: str | None, average_repeats: bool) -> dict:
    """Read, check, z-score and group the new volumes; write ``out``; returns a summary."""
    table, mask, affine, _ = own_input.check_headers(settings, split=False, image=False)
    stats = preprocess.read_zscore(zscore_file) if zscore == "training" else None
    if stats is not None:
        check_same_mask(settings["mask"], mask, affine, zscore_file, stats)
    parts = []
    for k, path in enumerate(settings["sessions"], start=1):
        rows = own_input.read_volumes(path, mask, settings["axes"], settings["key"])
        own_input.check_volumes(path, rows)
        if stats is None:
            rows = normalise.apply(rows, *session_statistics(path, rows))
        parts.append(rows[table.loc[table["session"] == k, "trial"].to_numpy() - 1])
    voxels = np.concatenate(parts)
    if stats is not None:
        voxels = normalise.apply(voxels, stats["mean"], stats["std"])
    groups = group_trials(table, average_repeats)
    prepared.write(out, voxels, table, groups)
    return {"volumes": len(voxels), "groups": len(groups), "voxels": voxels.shape[1], "zscore": zscore}


def check_same_mask(path: str, mask: np.ndarray, affine: np.ndarray, zscore_file: str, stats: dict) -> None:
    """The new volumes' mask is the one the model's training data were made with (own.mask)."""
    if mask.shape != stats["mask"].shape or not np.array_equal(mask, stats["mask"]):
        raise DataError(f"{path}: {int(mask.sum())} voxels on grid {mask.shape}, but the model's training data used "
                        f"{int(stats['mask'].sum())} voxels on grid {stats['mask'].shape} ({zscore_file}); expected "
                        "the same mask (resample the new volumes to the training grid first)")
    if not np.allclose(affine, stats["affine"], atol=1e-3):
        raise DataError(f"{path}: affine {np.round(affine, 3).tolist()} differs from the training mask's "
                        f"{np.round(stats['affine'], 3).tolist()} ({zscore_file}); expected the training grid")


def session_statistics(path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and std (ddof=1) of one session's volumes (``zscore: session``)."""
    return preprocess.zscore_statistics(rows, np.arange(len(rows)), path=str(path), rows_are="volumes of the session")


def group_trials(table, average_repeats: bool) -> list[np.ndarray]:
    """Row indices of each group, in order of first appearance: an image's trials together (with
    ``average_repeats`` and an image column), else each trial alone."""
    if not average_repeats or "image" not in table.columns:
        return [np.array([i]) for i in range(len(table))]
    groups, at = [], {}
    for i, image in enumerate(table["image"]):
        if isinstance(image, str) and image:
            if image not in at:
                at[image] = len(groups)
                groups.append([])
            groups[at[image]].append(i)
        else:
            groups.append([i])
    return [np.array(g) for g in groups]
