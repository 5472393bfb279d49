"""The prepared new volumes of ``predict`` (``predictions/inputs/voxels.hdf5``), written by
fmri_recon.predict.voxels, read by the decode and page rules:

    voxels  (G, R, V) float32  the R repeats of each of G groups (one image's trials, or one trial);
                               a group with fewer trials repeats them as upstream's test set does
                               (1 -> a a a, 2 -> a b a), so the model averages its outputs over R
    labels  (G,) str           what each group is: its image id, or ``s<session>-t<trial>``
    images  (G,) str           the image id, or "" where the table names none
    trials  (G, R, 2) int      the (session, trial) of each repeat
"""
from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers

log = logging.getLogger(__name__)


def write(out: str | Path, voxels: np.ndarray, table, groups: list[np.ndarray]) -> None:
    repeats = max(len(g) for g in groups)
    index = np.stack([np.resize(g, repeats) for g in groups])            # 1 -> a a a, 2 -> a b a
    has_image = "image" in table.columns
    images = [str(table["image"][g[0]]) if has_image and isinstance(table["image"][g[0]], str) else "" for g in groups]
    labels = [img or f"s{table['session'][g[0]]}-t{table['trial'][g[0]]}" for img, g in zip(images, groups)]
    trials = table[["session", "trial"]].to_numpy()[index]
    with helpers.atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("voxels", data=voxels[index])
        f.create_dataset("labels", data=np.array(labels, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("images", data=np.array(images, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("trials", data=trials)
    log.info("%d volumes in %d groups of up to %d repeats -> %s", len(voxels), len(groups), repeats, out)


def read(path: str | Path) -> dict:
    """The prepared file: voxels (G, R, V) float32, labels, images (lists of str), trials (G, R, 2)."""
    with h5py.File(helpers.need(Path(path)), "r") as f:
        return {"voxels": f["voxels"][:], "labels": [s.decode() for s in f["labels"][:]],
                "images": [s.decode() for s in f["images"][:]], "trials": f["trials"][:]}


def as_trained(voxels: np.ndarray, normalisation: str, data_dir, subject: int, num_sessions: int,
               new_test: bool) -> np.ndarray:
    """The prepared voxels as the experiment read its own: re-standardised with its train trials'
    statistics under ``normalisation: train_sessions`` (fmri_recon.data.normalise), else as they are."""
    from fmri_recon.data import normalise, nsd

    if normalisation != "train_sessions":
        return voxels
    split = nsd.open_split(data_dir, subject, num_sessions, new_test, normalisation)
    flat = normalise.apply(voxels.reshape(-1, voxels.shape[-1]), *split.train_statistics)
    return flat.reshape(voxels.shape)
