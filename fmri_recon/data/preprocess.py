"""Raw NSD -> the pscotti/mindeyev2 layout: the betas HDF5, the ``wds/`` shards, the images file and
the small index files, each with its provenance. The recipe is the one that made the released
``betas_all_subj0N_fp32_renorm.hdf5`` (Second-Sight's data_utils, docs/preprocessing.md):

* GLMsingle betas (b3 by default), the ROI ``== 1`` (nsdgeneral), voxels in the C order of the
  NIfTI ``(X,Y,Z)`` grid, rows in global-trial order;
* one z-score per voxel: mean and unbiased std over the training trials (image not in shared1000)
  of every rebuilt session, applied to every row; float32.

The experiment key ``normalisation: train_sessions`` re-standardises this file with the statistics
of the sessions a run trains on (fmri_recon.data.normalise): the honest one-hour setting.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers
from fmri_recon.data import nsd

RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest")
IMAGE_SIZE = 224                  # the released images file: (73000, 3, 224, 224) float16
SHARED_FILE = "shared1000.npy"
INDICES_FILE = "COCO_73k_subj_indices.hdf5"
# The files of the layout the preprocess rules make: these, and each subject's ``subject_outputs``.
SHARED_OUTPUTS = (nsd.IMAGES_FILE, nsd.EVAL_IMAGES, SHARED_FILE, INDICES_FILE)


def zscore_file(subject: int) -> str:
    """Not in the released layout: the mask, its affine and each voxel's mean and std the subject's
    betas were z-scored with (the preprocessing of raw NSD and of a lab's own data write it), so
    ``predict`` standardises new volumes exactly as the training data were."""
    return f"zscore/subj{subject:02d}.npz"


def subject_outputs(subject: int, sessions: int) -> list[str]:
    """One subject's rebuilt files: the betas, a train shard per session, both test shards."""
    return [nsd.betas_file(subject), *(nsd.train_tar(subject, k) for k in range(sessions)),
            nsd.test_tar(subject, True), nsd.test_tar(subject, False)]


# --------------------------------------------------------------------------- the science
def zscore_statistics(betas: np.ndarray, train_rows: np.ndarray, block: int = 2048, path: str = "betas",
                      rows_are: str = "training trials") -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel (column) mean and unbiased (N-1) std of ``train_rows``, ``block`` voxels at a time in
    float64. A voxel constant over the train rows cannot be z-scored (upstream's torch code would
    write NaN or inf): an error names it. ``rows_are`` says in errors what the rows are."""
    train_rows = np.asarray(train_rows)
    if len(train_rows) < 2:
        raise nsd.DataError(f"{path}: {len(train_rows)} {rows_are}; a z-score needs at least 2")
    mean, std = np.empty(betas.shape[1]), np.empty(betas.shape[1])
    for start in range(0, betas.shape[1], block):
        x = betas[train_rows, start:start + block].astype(np.float64)
        mean[start:start + block], std[start:start + block] = x.mean(0), x.std(0, ddof=1)
    flat = np.flatnonzero(std == 0)
    if len(flat):
        raise nsd.DataError(f"{path}: voxel(s) {flat[:10].tolist()} are constant over the {rows_are} "
                            "and cannot be z-scored (no data in this ROI there?)")
    return mean, std


def normalise(betas: np.ndarray, train_rows: np.ndarray, block: int = 2048, path: str = "betas",
              statistics: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Z-score every voxel (column) with the mean and unbiased std of ``train_rows``
    (``zscore_statistics``, or the ``statistics`` given), in place, ``block`` voxels at a time in
    float64; float32 out."""
    mean, std = statistics if statistics is not None else zscore_statistics(betas, train_rows, block, path)
    for start in range(0, betas.shape[1], block):
        x = betas[:, start:start + block].astype(np.float64)
        betas[:, start:start + block] = (x - mean[start:start + block]) / std[start:start + block]
    return betas.astype(np.float32, copy=False)


def resize_images(images: np.ndarray, size: int = 224, method: str = "bilinear", antialias: bool = True) -> np.ndarray:
    """(n, H, W, 3) uint8 (``imgBrick``) -> (n, 3, size, size) float16 in [0, 1]. Which resize
    made the released 224 px file is unconfirmed: ``rule check_release`` measures each method."""
    import torch
    import torch.nn.functional as F

    if method not in RESIZE_METHODS:
        raise ValueError(f"preprocess.image_resize: {method!r}, expected one of {RESIZE_METHODS}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        smooth = method in ("bilinear", "bicubic")
        x = F.interpolate(x, size=(size, size), mode=method, antialias=antialias and smooth,
                          **({"align_corners": False} if smooth else {}))
    return x.clamp(0, 1).half().numpy()


# --------------------------------------------------------------------------- builders (a subject's: rebuild.py)
def write_images(stimuli: str | Path, out: str | Path, settings: dict, origin: dict | None = None,
                 size: int = IMAGE_SIZE, chunk: int = 256) -> int:
    """``imgBrick`` of ``nsd_stimuli.hdf5`` -> the images file, ``chunk`` images at a time (the
    73000 images are 39 GB as uint8 at 425 px and never held whole)."""
    with h5py.File(helpers.need(Path(stimuli)), "r") as src:
        if "imgBrick" not in src or src["imgBrick"].ndim != 4 or src["imgBrick"].shape[3] != 3:
            raise nsd.DataError(f"{stimuli}: expected a dataset 'imgBrick' of shape (N, H, W, 3) uint8")
        brick = src["imgBrick"]
        with helpers.atomic_output(out) as tmp, h5py.File(tmp, "w") as dst:
            ds = dst.create_dataset("images", (len(brick), 3, size, size), np.float16, chunks=(1, 3, size, size))
            for start in range(0, len(brick), chunk):
                ds[start:start + chunk] = resize_images(brick[start:start + chunk], size, settings["image_resize"],
                                                        settings["image_antialias"])
            ds.attrs["provenance"] = json.dumps(origin or settings, sort_keys=True)
        return len(brick)


def write_eval_images(data_dir: str | Path, subject: int) -> None:
    """``evals/all_images.pt``: the subject's test images (sorted unique 73k ids of the test tar),
    as upstream's recon notebooks gathered them from the images file."""
    import torch

    data_dir = Path(data_dir)
    ids = np.unique(nsd.read_tar(data_dir / nsd.test_tar(subject, True))["behav"][:, 0, nsd.COL_IMAGE]).astype(np.int64)
    images = torch.from_numpy(nsd.read_images(data_dir, ids).astype(np.float32))
    with helpers.atomic_output(data_dir / nsd.EVAL_IMAGES) as tmp:
        torch.save(images, tmp)


def trial_images(data_dir: str | Path, subject: int, sessions: int) -> np.ndarray:
    """The 0-based 73k id of every trial of ``subject``, in global-trial order, from its shards."""
    data_dir = Path(data_dir)
    tars = [nsd.train_tar(subject, k) for k in range(sessions)] + [nsd.test_tar(subject, True)]
    behav = np.concatenate([nsd.read_tar(data_dir / t)["behav"][:, 0] for t in tars])
    return behav[np.argsort(behav[:, nsd.COL_GLOBAL_TRIAL]), nsd.COL_IMAGE].astype(np.int64)


def write_index_files(data_dir: str | Path, shared: np.ndarray, image_ids: dict[int, np.ndarray]) -> None:
    """``shared1000.npy`` (bool per 73k id) and ``COCO_73k_subj_indices.hdf5`` (the 0-based 73k id
    of every trial of each subject, in global-trial order)."""
    data_dir = Path(data_dir)
    with helpers.atomic_output(data_dir / SHARED_FILE) as tmp, open(tmp, "wb") as f:
        np.save(f, shared)
    with helpers.atomic_output(data_dir / INDICES_FILE) as tmp, h5py.File(tmp, "w") as f:
        for subject, ids in sorted(image_ids.items()):
            f.create_dataset(nsd.mask_group(subject), data=np.asarray(ids, np.int64))


def write_betas(path: str | Path, betas: np.ndarray, origin: dict | None = None) -> None:
    """The betas file: dataset ``betas``, contiguous like the released one (Second-Sight wrote it
    without chunks), with its provenance as an attribute."""
    with helpers.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("betas", data=betas)
        if origin:
            ds.attrs["provenance"] = json.dumps(origin, sort_keys=True)


def write_zscore(path: str | Path, mask: np.ndarray, affine: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    with helpers.atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, mask=mask, affine=affine, mean=mean, std=std)


def read_zscore(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(helpers.need(Path(path))) as z:
        return {k: z[k] for k in ("mask", "affine", "mean", "std")}


# --------------------------------------------------------------------------- provenance
def provenance(sources: dict[str, str | Path], settings: dict, made: dict | None = None) -> dict:
    """Where a rebuilt file came from: each source file with its size, the settings, the code."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        code = version("fmri-reconstruction")
    except PackageNotFoundError:
        code = "unknown"
    return {"sources": {key: {"path": str(p), "bytes": os.path.getsize(p)} for key, p in sources.items()},
            "settings": settings, "made": made or {}, "code_version": code, "code_commit": _git_commit()}


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True,
                             timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None
