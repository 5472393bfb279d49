"""How far the rebuilt files are from the released ones (``rule check_release``): the betas per
voxel and element by element, the behaviour arrays of every shard, and which resize of NSD's
425 px stimuli comes closest to the released 224 px images (unconfirmed upstream).

Files missing from the release folder are reported as absent, not as errors: a user may hold
only part of the dataset repo. Everything is read in chunks of rows.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from fmri_recon.data import nsd, preprocess

# A float64 rebuild and Second-Sight's float32 torch arithmetic differ by rounding: z-scores of
# up to ~10 agree to ~1e-5 (docs/preprocessing.md).
ATOL = 1e-4


def _row(item: str, measure: str, value, note: str = "") -> dict:
    return {"item": item, "measure": measure, "value": value, "note": note}


def compare_betas(rebuilt: Path, release: Path, train_rows: np.ndarray, chunk: int = 1024) -> list[dict]:
    """Shape, the per-voxel mean/std of both over the training rows, and element-wise differences."""
    item = rebuilt.name
    with h5py.File(rebuilt, "r") as a, h5py.File(release, "r") as b:
        x, y = a["betas"], b["betas"]
        if x.shape != y.shape:
            return [_row(item, "shape", f"{x.shape} vs {y.shape}", "different: rebuilt vs released")]
        worst, over, stats = 0.0, 0, []
        for start in range(0, x.shape[0], chunk):
            u, v = x[start:start + chunk].astype(np.float64), y[start:start + chunk].astype(np.float64)
            diff = np.abs(u - v)
            worst, over = max(worst, float(diff.max())), over + int((diff > ATOL).sum())
        for ds in (x, y):
            t = nsd.read_rows(rebuilt if ds is x else release, "betas", train_rows).astype(np.float64)
            stats.append((t.mean(0), t.std(0, ddof=1)))
    n = x.shape[0] * x.shape[1]
    return [_row(item, "shape", str(x.shape)),
            _row(item, "max |rebuilt - released|", f"{worst:.3g}", f"tolerance {ATOL}"),
            _row(item, "elements over tolerance", over, f"of {n}"),
            _row(item, "rebuilt train mean, max |.| over voxels", f"{np.abs(stats[0][0]).max():.3g}", "0 expected"),
            _row(item, "released train mean, max |.| over voxels", f"{np.abs(stats[1][0]).max():.3g}", "0 if all-session z-scored"),
            _row(item, "released train std, max |std - 1|", f"{np.abs(stats[1][1] - 1).max():.3g}", "0 if ddof=1 z-scored")]


def compare_shards(rebuilt_dir: Path, release_dir: Path, tars: list[str]) -> list[dict]:
    rows = []
    for tar in tars:
        if not (release_dir / tar).exists():
            rows.append(_row(tar, "present in release", "no", "not compared"))
            continue
        a, b = nsd.read_tar(rebuilt_dir / tar), nsd.read_tar(release_dir / tar)
        if len(a["behav"]) != len(b["behav"]):
            rows.append(_row(tar, "samples", f"{len(a['behav'])} vs {len(b['behav'])}", "different: rebuilt vs released"))
            continue
        for name in nsd.SAMPLE_ARRAYS:
            diff = np.abs(np.nan_to_num(a[name], nan=-1) - np.nan_to_num(b[name], nan=-1))
            cols = sorted(set(np.nonzero(diff > 0)[-1].tolist()))
            rows.append(_row(tar, f"{name} max |diff|", f"{diff.max():.3g}", f"columns differing: {cols}" if cols else "equal"))
    return rows


def compare_images(stimuli: Path, release: Path, ids: np.ndarray) -> list[dict]:
    """Mean |difference| of each resize of ``imgBrick[ids]`` from the released images: the method
    that made the released file gives the smallest (float16 rounding only)."""
    with h5py.File(stimuli, "r") as f:
        brick = f["imgBrick"][np.sort(ids)]
    target = nsd.read_rows(release, "images", np.sort(ids)).astype(np.float32)
    rows = []
    for method in preprocess.RESIZE_METHODS:
        for antialias in (True, False) if method in ("bilinear", "bicubic") else (False,):
            got = preprocess.resize_images(brick, target.shape[-1], method, antialias).astype(np.float32)
            rows.append(_row(nsd.IMAGES_FILE, f"mean |diff| {method}{' antialias' if antialias else ''}",
                             f"{np.abs(got - target).mean():.3g}", f"{len(ids)} images"))
    best = min(rows, key=lambda r: float(r["value"]))
    rows.append(_row(nsd.IMAGES_FILE, "closest resize", best["measure"].removeprefix("mean |diff| ")))
    return rows


def check(rebuilt_dir: str | Path, release_dir: str | Path, stimuli: str | Path | None, subject: int, sessions: int,
          image_count: int = 64) -> list[dict]:
    """Every comparison of one subject's rebuilt files with the released ones that are present
    (the images only with NSD's ``stimuli`` file: preprocess.images = raw)."""
    rebuilt_dir, release_dir = Path(rebuilt_dir), Path(release_dir)
    tars = preprocess.subject_outputs(subject, sessions)[1:]
    behav = np.concatenate([nsd.read_tar(rebuilt_dir / t)["behav"][:, 0] for t in tars[:sessions]])
    rows = []
    release = release_dir / nsd.betas_file(subject)
    if release.exists():
        rows += compare_betas(rebuilt_dir / nsd.betas_file(subject), release, behav[:, nsd.COL_GLOBAL_TRIAL].astype(np.int64))
    else:
        rows.append(_row(nsd.betas_file(subject), "present in release", "no", "not compared"))
    rows += compare_shards(rebuilt_dir, release_dir, tars)
    images = release_dir / nsd.IMAGES_FILE
    if stimuli is None:
        rows.append(_row(nsd.IMAGES_FILE, "rebuilt", "no", "preprocess.images = release"))
    elif images.exists():
        ids = np.unique(behav[:, nsd.COL_IMAGE].astype(np.int64))[:image_count]
        rows += compare_images(Path(stimuli), images, ids)
    else:
        rows.append(_row(nsd.IMAGES_FILE, "present in release", "no", "not compared"))
    return rows
