"""NSD's own release (the ``natural-scenes-dataset`` bucket): which files a preprocessing run
needs, and their readers (facts and sources: docs/preprocessing.md).

Light at import (no nibabel, scipy or pandas): the Snakefile lists the raw files from here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_recon.helpers import DataError

# Completed NSD sessions per subject (the NSD manual's Technical notes; all public since 2023-08-20).
SESSIONS = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
# GLMsingle's single-trial beta versions: the released renorm files are b3 (Second-Sight's data_utils).
BETA_VERSIONS = {"b1": "betas_assumehrf", "b2": "betas_fithrf", "b3": "betas_fithrf_GLMdenoise_RR"}
NUM_IMAGES = 73000

DESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIM_INFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
STIMULI = "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5"


def _subj(subject: int) -> str:
    return f"subj{subject:02d}"


def betas_key(subject: int, session: int, version: str = "b3", fmt: str = "nii.gz") -> str:
    """Key of one session's single-trial betas (1.8 mm): NIfTI ``(X,Y,Z,750)`` or HDF5 ``(750,Z,Y,X)``."""
    return (f"nsddata_betas/ppdata/{_subj(subject)}/func1pt8mm/{BETA_VERSIONS[version]}/"
            f"betas_session{session:02d}.{fmt}")


def roi_key(subject: int, roi: str = "nsdgeneral") -> str:
    return f"nsddata/ppdata/{_subj(subject)}/func1pt8mm/roi/{roi}.nii.gz"


def responses_key(subject: int) -> str:
    return f"nsddata/ppdata/{_subj(subject)}/behav/responses.tsv"


def sessions_of(subject: int, sessions: int | None) -> int:
    """Sessions to rebuild: ``sessions``, or (None) all of NSD's completed sessions of ``subject``."""
    if sessions is not None:
        return int(sessions)
    if subject not in SESSIONS:
        raise DataError(f"preprocess.sessions: null means all of NSD's sessions, but NSD has no subject {subject} "
                        f"(1-8); set preprocess.sessions")
    return SESSIONS[subject]


def subject_keys(subject: int, sessions: int, settings: dict) -> list[str]:
    """The bucket keys of one subject's files: betas of each session, the ROI volume, responses."""
    return [*(betas_key(subject, k, settings["beta_version"], settings["beta_format"]) for k in range(1, sessions + 1)),
            roi_key(subject, settings["roi"]), responses_key(subject)]


def config_problems(config: dict, subject_sessions: dict[int, int]) -> list[str]:
    """preprocess.source = raw: dataset nsd, NSD's subjects, enough sessions rebuilt for every
    experiment (one line per problem naming the key, as fmri_recon.configuration.check)."""
    pre = config.get("preprocess") or {}
    if pre.get("source", "release") != "raw":
        return []
    if config["dataset"] != "nsd":
        return ["config: preprocess.source = raw needs dataset = nsd (the synthetic dataset is written directly)"]
    problems, rebuilt = [], pre.get("sessions")
    for s, n in subject_sessions.items():
        have = min(rebuilt or SESSIONS.get(s, 0), SESSIONS.get(s, 0))
        if s not in SESSIONS:
            problems.append(f"config: subject {s} is not an NSD subject (1-8): preprocess.source = raw rebuilds NSD's")
        elif rebuilt is not None and rebuilt > SESSIONS[s]:
            problems.append(f"config: preprocess.sessions = {rebuilt}, but NSD's subject {s} has {SESSIONS[s]} sessions")
        elif n > have:
            problems.append(f"config: {n} sessions of subject {s} are used but preprocess.sessions rebuilds {have}")
    return problems


# --------------------------------------------------------------------------- readers
def read_roi(path: str | Path, labels) -> np.ndarray:
    """Boolean (X,Y,Z) mask of the voxels whose label in the ROI volume is one of ``labels``
    (nsdgeneral: -1 outside, 0, 1 inside; NaN counts as 0)."""
    import nibabel as nib

    volume = np.nan_to_num(np.asarray(nib.load(str(path)).get_fdata()), nan=0.0)
    if volume.ndim != 3:
        raise DataError(f"{path}: ROI volume of shape {volume.shape}, expected 3 dimensions (X,Y,Z)")
    mask = np.isin(volume, np.asarray(labels, dtype=np.float64))
    if not mask.any():
        raise DataError(f"{path}: no voxel has label(s) {list(labels)} (labels present: "
                        f"{np.unique(volume)[:20].tolist()})")
    return mask


def read_affine(path: str | Path) -> np.ndarray:
    """The voxel-to-world affine of a NIfTI volume (the ROI's: the grid the voxels are on)."""
    import nibabel as nib

    return nib.load(str(path)).affine


def read_betas(path: str | Path, mask: np.ndarray) -> np.ndarray:
    """One session's betas of the voxels in ``mask`` as (trials, voxels) float32, voxels in the
    C order of the NIfTI ``(X,Y,Z)`` grid (the released files' order). NSD's values are percent
    signal change x 300 stored as int16; no /300, as upstream (the z-score removes the scale)."""
    path = Path(path)
    if path.name.endswith(".hdf5"):
        return _read_betas_h5(path, mask)
    import nibabel as nib

    img = nib.load(str(path))
    if img.ndim != 4 or img.shape[:3] != mask.shape:
        raise DataError(f"{path}: betas of shape {img.shape}, expected (X,Y,Z,trials) on the ROI's grid {mask.shape}")
    data = np.asanyarray(img.dataobj)                 # int16 as stored, 1 GB for a session of subj01
    return data.reshape(-1, data.shape[3])[mask.reshape(-1)].T.astype(np.float32)


def _read_betas_h5(path: Path, mask: np.ndarray) -> np.ndarray:
    """NSD's HDF5 betas: MATLAB wrote X x Y x Z x 750, so h5py sees (750, Z, Y, X). Only the
    bounding box of the mask is read."""
    import h5py

    with h5py.File(path, "r") as f:
        if "betas" not in f:
            raise DataError(f"{path}: no dataset 'betas' (found {sorted(f.keys())})")
        ds = f["betas"]
        if ds.ndim != 4 or ds.shape[1:] != mask.shape[::-1]:
            raise DataError(f"{path}: 'betas' of shape {ds.shape}, expected (trials, Z, Y, X) = "
                            f"(trials, {', '.join(map(str, mask.shape[::-1]))}) for the ROI's grid")
        lo, hi = (np.array(w) for w in (np.argwhere(mask).min(0), np.argwhere(mask).max(0) + 1))
        box = ds[:, lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]].transpose(0, 3, 2, 1)   # -> (trials, X, Y, Z)
    inside = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return box.reshape(len(box), -1)[:, inside.reshape(-1)].astype(np.float32)


def read_responses(path: str | Path, sessions: int):
    """The rows of ``responses.tsv`` of the first ``sessions`` sessions, in file (chronological) order."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable tab-separated responses.tsv ({e})") from e
    if "SESSION" not in table.columns:
        raise DataError(f"{path}: no SESSION column (found {list(table.columns)[:8]}...); expected NSD's responses.tsv")
    have = int(table["SESSION"].max())
    if have < sessions:
        raise DataError(f"{path}: sessions 1-{have}, but {sessions} are to be rebuilt (preprocess.sessions)")
    return table[table["SESSION"] <= sessions].reset_index(drop=True)


def read_shared1000(design: str | Path, stim_info: str | Path | None = None) -> np.ndarray:
    """Boolean (73000,) of the shared images, from the design's ``sharedix`` (1-based 73k ids),
    checked against the ``shared1000`` column of ``nsd_stim_info_merged.csv`` when given."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(design), variable_names=["sharedix"])
    except (OSError, ValueError) as e:
        raise DataError(f"{design}: not a readable MATLAB (v5) file ({e})") from e
    if "sharedix" not in mat:
        raise DataError(f"{design}: no variable 'sharedix' (the 1-based 73k ids of the shared images)")
    ids = np.asarray(mat["sharedix"]).ravel().astype(np.int64) - 1
    n = NUM_IMAGES if stim_info is None else None
    if stim_info is not None:
        import pandas as pd

        column = pd.read_csv(stim_info, usecols=["shared1000"])["shared1000"].to_numpy(bool)
        n = len(column)
    shared = np.zeros(max(n, int(ids.max()) + 1), bool)
    shared[ids] = True
    if stim_info is not None and not np.array_equal(shared, column):
        raise DataError(f"{design} and {stim_info} disagree on the shared images: sharedix has {int(shared.sum())}, "
                        f"the shared1000 column {int(column.sum())} ({int((shared != column).sum())} differ)")
    return shared
