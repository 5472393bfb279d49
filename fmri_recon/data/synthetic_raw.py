"""The synthetic dataset written as NSD's own release is laid out (the bucket's keys), so the
preprocessing stage runs here on NSD's real formats: NIfTI betas (and their HDF5 twins) on a
voxel grid with a brain mask and ROI volumes, ``responses.tsv``, the design ``.mat``,
``nsd_stim_info_merged.csv`` and ``nsd_stimuli.hdf5``.

Rebuilt by the preprocessing stage, it gives exactly the files ``synthetic.write_dataset`` writes
directly from the same arrays (tests/workflow/test_preprocess_workflow.py checks it).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers
from fmri_recon.data import nsd, raw_nsd, synthetic

RESPONSES = ("SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "10KID", "TIME", "ISOLD", "ISCORRECT", "RT", "CHANGEMIND",
             "MEMORYRECENT", "MEMORYFIRST", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1", "TOTAL2", "BUTTON",
             "MISSINGDATA")
VOXEL_MM = 1.8
PRF_LABELS = (1, 3, 5, 7)         # prf-visualrois: V1v, V2v, V3v, hV4 (NSD's labels) of the masks' V1-V4


def grid_for(num_voxels: int) -> tuple[int, int, int]:
    """A small X x Y x Z grid (unequal sides, so an axis mix-up shows) with room for twice the ROI."""
    k = 2
    while (k + 3) * (k + 1) * k < 2 * num_voxels:
        k += 1
    return k + 3, k + 1, k


def write_raw(cfg: synthetic.SyntheticConfig, root: str | Path, resize: tuple[str, bool] = ("bilinear", True),
              beta_version: str = "b3") -> list[str]:
    """Write the raw release of the synthetic dataset under ``root`` (bucket keys as paths); returns the keys."""
    root = Path(root)
    gen = synthetic.generate(cfg, resize)
    keys = [_stimuli(root, gen.photos), _design(root, gen.shared), _stim_info(root, gen)]
    for subject, b in gen.behaviour.items():
        keys += _subject(root, cfg, subject, b, gen.betas[subject], beta_version)
    return keys


def _subject(root: Path, cfg, subject: int, b: np.ndarray, betas: np.ndarray, version: str) -> list[str]:
    rng = np.random.default_rng([cfg.seed, subject, 7])           # the grid: apart from the dataset's draws
    n_vox, tps = betas.shape[1], cfg.trials_per_session
    grid = grid_for(n_vox)
    brain = np.zeros(int(np.prod(grid)), bool)
    brain[rng.choice(brain.size, int(1.6 * n_vox), replace=False)] = True
    roi_at = np.sort(rng.choice(np.flatnonzero(brain), n_vox, replace=False))   # C order = the voxels' order
    roi = np.where(brain, 0.0, -1.0)
    roi[roi_at] = 1.0
    prf = np.zeros(brain.size)
    start = 0
    for label, size in zip(PRF_LABELS, _region_sizes(n_vox)):
        prf[roi_at[start:start + size]] = label
        start += size
    others = np.flatnonzero(brain & (roi != 1))
    keys = [_nifti(root, raw_nsd.roi_key(subject, "nsdgeneral"), roi.reshape(grid)),
            _nifti(root, raw_nsd.roi_key(subject, "prf-visualrois"), prf.reshape(grid)),
            _nifti(root, f"nsddata/ppdata/subj{subject:02d}/func1pt8mm/brainmask.nii.gz", brain.reshape(grid) * 1.0)]
    for k in range(cfg.num_sessions):
        volume = np.zeros((brain.size, tps), np.int16)
        volume[roi_at] = betas[k * tps:(k + 1) * tps].T
        volume[others] = rng.normal(0, 200, (len(others), tps)).round()
        volume = volume.reshape(*grid, tps)
        keys.append(_nifti(root, raw_nsd.betas_key(subject, k + 1, version, "nii.gz"), volume))
        h5 = raw_nsd.betas_key(subject, k + 1, version, "hdf5")    # MATLAB's X x Y x Z x 750, as h5py sees it
        with helpers.atomic_output(root / h5) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("betas", data=volume.transpose(3, 2, 1, 0), chunks=(tps, 1, 1, 1))
        keys.append(h5)
    keys.append(_responses(root, subject, b))
    return keys


def _region_sizes(n: int, fractions=(0.15, 0.15, 0.12, 0.08)) -> list[int]:
    return [max(2, int(round(fr * n))) for fr in fractions]       # synthetic.write_masks' V1-V4 blocks


def _nifti(root: Path, key: str, volume: np.ndarray) -> str:
    import nibabel as nib

    img = nib.Nifti1Image(volume, np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0]))
    with helpers.atomic_output(root / key, suffix=".nii.gz") as tmp:
        nib.save(img, str(tmp))
    return key


def _responses(root: Path, subject: int, b: np.ndarray) -> str:
    """``responses.tsv``: NSD's 19 columns, 1-based ids, NaN where the behaviour column holds -1."""
    import pandas as pd

    image = b[:, nsd.COL_IMAGE].astype(np.int64)
    first = {}
    cols = {"SUBJECT": b[:, 1].astype(int), "SESSION": b[:, 2].astype(int), "RUN": b[:, 3].astype(int),
            "TRIAL": b[:, 4].astype(int), "73KID": image + 1,
            "10KID": [first.setdefault(i, len(first) + 1) for i in image],
            "TIME": b[:, 6] + (np.arange(len(b)) % 750) * 4 / 86400,  # day + seconds into the session
            "ISOLD": b[:, 7].astype(int)}
    for col, name in enumerate(("ISCORRECT", "RT", "CHANGEMIND", "ISOLDCURRENT", "ISCORRECTCURRENT", "TOTAL1",
                                "TOTAL2", "BUTTON"), start=8):
        cols[name] = np.where(b[:, col] == -1, np.nan, b[:, col])
    cols["MEMORYRECENT"] = cols["MEMORYFIRST"] = np.full(len(b), np.nan)
    cols["MISSINGDATA"] = np.zeros(len(b), int)
    key = raw_nsd.responses_key(subject)
    with helpers.atomic_output(root / key) as tmp:
        pd.DataFrame({c: cols[c] for c in RESPONSES}).to_csv(tmp, sep="\t", index=False)
    return key


def _design(root: Path, shared: np.ndarray) -> str:
    """``nsd_expdesign.mat`` with ``sharedix`` (1-based 73k ids of the shared images, 1 x N)."""
    import scipy.io

    with helpers.atomic_output(root / raw_nsd.DESIGN, suffix=".mat") as tmp:
        scipy.io.savemat(str(tmp), {"sharedix": (np.flatnonzero(shared) + 1)[None].astype(np.float64)})
    return raw_nsd.DESIGN


def _stim_info(root: Path, gen) -> str:
    """``nsd_stim_info_merged.csv``: nsdId (0-based), shared1000, subjectS and subjectS_repR (1-based trial, 0: none)."""
    import pandas as pd

    n = len(gen.shared)
    table = {"cocoId": np.arange(n), "nsdId": np.arange(n), "shared1000": gen.shared}
    for s in range(1, 9):
        reps = np.zeros((n, 3), np.int64)
        if s in gen.behaviour:
            image = gen.behaviour[s][:, nsd.COL_IMAGE].astype(np.int64)
            for t, i in enumerate(image):                         # 1-based global trial of each showing
                reps[i, np.argmin(reps[i] > 0)] = t + 1
        table[f"subject{s}"] = (reps[:, 0] > 0).astype(int)
        for r in range(3):
            table[f"subject{s}_rep{r}"] = reps[:, r]
    with helpers.atomic_output(root / raw_nsd.STIM_INFO) as tmp:
        pd.DataFrame(table).to_csv(tmp, index=False)
    return raw_nsd.STIM_INFO


def _stimuli(root: Path, photos: np.ndarray) -> str:
    with helpers.atomic_output(root / raw_nsd.STIMULI) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("imgBrick", data=photos, chunks=(1, *photos.shape[1:]))
    return raw_nsd.STIMULI
