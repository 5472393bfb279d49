"""How a run's voxels are normalised: the experiment key ``normalisation``.

The released ``betas_all_subjNN_fp32_renorm.hdf5`` is z-scored per voxel with one mean and one
std (ddof=1) over the train trials (images not in shared1000) of ALL sessions, applied to every
row (docs/upstream.md §1.3). So upstream's "one hour" models were trained on data normalised with
statistics of all 40 hours. ``all_sessions`` reads the file as it is (upstream's choice);
``train_sessions`` re-standardises every voxel with the mean and std (ddof=1) of the run's own
train trials (the non-test trials of its first ``num_sessions`` sessions), train and test rows
alike: what a lab holding only those sessions could do.

The file is per voxel an affine function of the raw betas, ``f = (raw - m_all) / s_all`` with
``s_all > 0``, and a z-score is invariant under a positive affine map: the train trials' mean of
``f`` is ``(m_train - m_all) / s_all`` and their std ``s_train / s_all``, so re-standardising the
file with them gives ``(raw - m_train) / s_train`` exactly (up to the file's float32 rounding).
This therefore works on the released files as well as on a rebuild.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers
from fmri_recon.helpers import DataError

NORMALISATIONS = ("all_sessions", "train_sessions")


def check(normalisation: str) -> str:
    """``normalisation`` if it is one of :data:`NORMALISATIONS`, else ValueError naming them."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation = {normalisation!r}: expected one of {', '.join(NORMALISATIONS)}")
    return normalisation


def train_statistics(path: str | Path, rows: np.ndarray, chunk: int = 1024, *, name: str = "betas",
                     subject: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel mean and std (ddof=1) of rows ``rows`` (each distinct row once) of dataset ``name``.

    Read ``chunk`` consecutive file rows at a time (spans holding none of ``rows`` are skipped),
    never the whole file; accumulated in float64 by merging each chunk's mean and sum of squared
    deviations (Chan et al.), which stays exact where a plain sum of squares would cancel.
    A voxel constant over ``rows`` cannot be z-scored: DataError naming the file, the subject and
    the voxel (upstream's torch code would write NaN there: ``0 / 0``, or inf on rows that differ).
    """
    path = helpers.need(Path(path))
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    who = f" (subject {subject})" if subject is not None else ""
    if len(rows) < 2:
        raise DataError(f"{path}: {len(rows)} train trial rows{who}; a std (ddof=1) needs at least 2")
    with h5py.File(path, "r") as f:
        ds = f[name]
        if rows[0] < 0 or rows[-1] >= ds.shape[0]:
            raise DataError(f"{path}: train trial rows {rows[0]}..{rows[-1]}{who} outside {name!r} "
                            f"with {ds.shape[0]} rows")
        n, mean, m2 = 0, np.zeros(ds.shape[1]), np.zeros(ds.shape[1])
        low, high = np.full(ds.shape[1], np.inf), np.full(ds.shape[1], -np.inf)
        for start in range(int(rows[0]), int(rows[-1]) + 1, chunk):
            wanted = rows[np.searchsorted(rows, start):np.searchsorted(rows, start + chunk)]
            if not len(wanted):
                continue
            x = ds[start:int(wanted[-1]) + 1][wanted - start].astype(np.float64)
            k, part_mean = len(x), x.mean(0)
            delta = part_mean - mean
            m2 += ((x - part_mean) ** 2).sum(0) + delta ** 2 * (n * k / (n + k))
            mean += delta * (k / (n + k))
            n += k
            low, high = np.minimum(low, x.min(0)), np.maximum(high, x.max(0))
    constant = np.flatnonzero(low == high)
    if len(constant):
        raise DataError(f"{path}: voxel {constant[0]} (0-based column of {name!r}){who} is constant over the "
                        f"{n} train trials ({len(constant)} such voxels: {constant[:10].tolist()}); "
                        "normalisation train_sessions cannot z-score it (std 0)")
    return mean, np.sqrt(m2 / (n - 1))


def apply(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per voxel (last axis), in place on float32 ``x``, which is returned."""
    if x.dtype != np.float32:
        raise TypeError(f"apply: float32 voxels expected, got {x.dtype}")
    np.subtract(x, mean.astype(np.float32), out=x)
    np.divide(x, std.astype(np.float32), out=x)
    return x
