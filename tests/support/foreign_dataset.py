"""A dataset in the published pscotti/mindeyev2 layout written WITHOUT the project's writer.

Plain ``tarfile`` + ``numpy.save`` + ``h5py`` + ``torch.save``, with choices our generator
never makes: another subject number, voxel count, trials per session, image count, repeat
pattern, captions stored as a Python list. The reader must take it as it is.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import h5py
import numpy as np
import torch

SUBJECT, VOXELS, TRIALS_PER_SESSION, SESSIONS, IMAGES = 5, 321, 40, 2, 97


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float64))
    return buf.getvalue()


def write_tar(path: Path, behav_rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i, row in enumerate(behav_rows):
            arrays = {"behav": row[None], "past_behav": -np.ones((15, 17)), "future_behav": -np.ones((15, 17)),
                      "olds_behav": -np.ones((3, 17))}
            for name, arr in arrays.items():
                data = _npy(arr)
                info = tarfile.TarInfo(f"sample{i:09d}.{name}.npy")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write(root: Path, *, betas_name: str = "betas", betas_rows: int | None = None, masks: bool = True) -> dict:
    """Write the layout under ``root``; returns what a reader should find."""
    rng = np.random.default_rng(5)
    test_ids = np.array([3, 10, 11, 40, 41, 90])
    reps = np.array([2, 2, 1, 2, 2, 2])                 # no image with 3 repeats at all
    total = TRIALS_PER_SESSION * SESSIONS
    test_trials = np.repeat(test_ids, reps)
    train_pool = np.setdiff1d(np.arange(IMAGES), test_ids)
    trials = rng.permutation(np.concatenate([test_trials, rng.choice(train_pool, total - len(test_trials))]))
    behav = -np.ones((total, 17))
    behav[:, 0], behav[:, 1] = trials, SUBJECT
    behav[:, 2] = np.arange(total) // TRIALS_PER_SESSION + 1
    behav[:, 5] = np.arange(total)
    behav[:, 16] = np.isin(trials, test_ids)
    shared = behav[:, 16] == 1
    for k in range(SESSIONS):
        write_tar(root / f"wds/subj{SUBJECT:02d}/train/{k}.tar", behav[(behav[:, 2] == k + 1) & ~shared])
    write_tar(root / f"wds/subj{SUBJECT:02d}/new_test/0.tar", behav[shared])
    with h5py.File(root / f"betas_all_subj{SUBJECT:02d}_fp32_renorm.hdf5", "w") as f:
        f[betas_name] = rng.standard_normal((betas_rows or total, VOXELS)).astype(np.float32)
    images = rng.random((IMAGES, 3, 224, 224)).astype(np.float16)
    with h5py.File(root / "coco_images_224_float16.hdf5", "w") as f:
        f["images"] = images
    (root / "evals").mkdir(exist_ok=True)
    torch.save(torch.from_numpy(images[test_ids].astype(np.float32)), root / "evals/all_images.pt")
    torch.save([f"caption {i}" for i in test_ids], root / "evals/all_captions.pt")
    torch.save([f"git caption {i}" for i in test_ids], root / "evals/all_git_generated_captions.pt")
    if masks:
        from fmri_recon.data.synthetic import write_masks

        write_masks(root / "brain_region_masks.hdf5", [SUBJECT], VOXELS)
    return {"test_ids": test_ids, "reps": reps, "behav": behav, "images": images}
