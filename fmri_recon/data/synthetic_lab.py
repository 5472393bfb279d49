"""An example "own lab" dataset in the input format of docs/own_data.md, made from the synthetic
dataset's arrays (fmri_recon.data.synthetic): what the guide's worked example and the tests run on.

    python -m fmri_recon.data.synthetic_lab DIR

writes under DIR:

    sessions/ses-01_betas.nii.gz ...   one 4D NIfTI per session, on a 2 mm grid unlike NSD's, NaN
                                       outside the brain as GLMsingle writes it; session 2 is shorter
    mask.nii.gz                        the voxels to decode (1), on the same grid
    trials.csv                         session, trial, image, split
    stimuli/<image id>.png             every stimulus
    new/ses-01_betas.nii.gz            a later session, never trained on: the volumes `predict` decodes
    new/trials.csv                     its table (session, trial, image: which picture was shown)
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from fmri_recon import helpers
from fmri_recon.data import synthetic

GRID = (14, 12, 10)               # X, Y, Z: not NSD's 1.8 mm grid (81 x 104 x 83 for subject 1)
VOXEL_MM = 2.0
SHORTER = 7                       # trials session 2 lacks (sessions may differ in length)


def default_config(**overrides) -> synthetic.SyntheticConfig:
    """Sizes that train a tiny model in about a minute on 2 cores; the last session is held out."""
    sizes = dict(seed=3, num_voxels=[500], num_sessions=3, trials_per_session=250, num_images=300,
                 num_test_images=30, noise=0.7, semantic=2.0, raw_image_size=96)
    return synthetic.SyntheticConfig(**{**sizes, **overrides})


def write(root: str | Path, cfg: synthetic.SyntheticConfig | None = None) -> dict:
    """Write the example under ``root``; returns its paths (the config values that point at them)."""
    root, cfg = Path(root), cfg or default_config()
    gen = synthetic.generate(cfg, ("bilinear", True))
    subject = cfg.subjects[0]
    b, betas = gen.behaviour[subject], gen.betas[subject]
    rng = np.random.default_rng([cfg.seed, 11])
    where = np.sort(rng.choice(int(np.prod(GRID)), betas.shape[1], replace=False))   # C order = voxel order
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = -np.array(GRID) * VOXEL_MM / 2
    _nifti(root / "mask.nii.gz", _volume(np.ones((1, len(where))), where, fill=0.0)[..., 0], affine)
    ids = [f"img_{i:04d}" for i in range(cfg.num_images)]
    for i, photo in enumerate(gen.photos):
        _png(root / "stimuli" / f"{ids[i]}.png", photo)
    session = b[:, 2].astype(int)
    last = cfg.num_sessions
    keep = ~((session == 2) & (np.arange(len(b)) % cfg.trials_per_session >= cfg.trials_per_session - SHORTER))
    rows = []
    for k in range(1, last):
        at = np.flatnonzero((session == k) & keep)
        _nifti(root / "sessions" / f"ses-{k:02d}_betas.nii.gz", _volume(betas[at], where), affine)
        rows += [[k, t + 1, ids[int(b[i, 0])], "test" if b[i, 16] else "train"] for t, i in enumerate(at)]
    _table(root / "trials.csv", ["session", "trial", "image", "split"], rows)
    at = np.flatnonzero(session == last)
    _nifti(root / "new" / "ses-01_betas.nii.gz", _volume(betas[at], where), affine)
    _table(root / "new" / "trials.csv", ["session", "trial", "image"],
           [[1, t + 1, ids[int(b[i, 0])]] for t, i in enumerate(at)])
    return {"sessions": [str(root / "sessions" / f"ses-{k:02d}_betas.nii.gz") for k in range(1, last)],
            "mask": str(root / "mask.nii.gz"), "trials": str(root / "trials.csv"), "images": str(root / "stimuli"),
            "new_sessions": [str(root / "new" / "ses-01_betas.nii.gz")], "new_trials": str(root / "new" / "trials.csv")}


def _volume(rows: np.ndarray, where: np.ndarray, fill: float = np.nan) -> np.ndarray:
    """(trials, voxels) -> (X, Y, Z, trials) float32, ``fill`` outside the voxels."""
    vol = np.full((int(np.prod(GRID)), len(rows)), fill, np.float32)
    vol[where] = rows.T
    return vol.reshape(*GRID, len(rows))


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    with helpers.atomic_output(path, suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(data, affine), str(tmp))


def _png(path: Path, photo: np.ndarray) -> None:
    from PIL import Image

    with helpers.atomic_output(path, suffix=".png") as tmp:
        Image.fromarray(photo).save(tmp)


def _table(path: Path, header: list[str], rows: list) -> None:
    with helpers.atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write the example into")
    for path in write(parser.parse_args().root).values():
        print(path)


if __name__ == "__main__":
    main()
