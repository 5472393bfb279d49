"""A lab's own scans as input (``dataset: own``, and the new volumes of ``predict``): the readers
and every check of the format docs/own_data.md describes.

* betas: one 4D file of single-trial betas per session (GLMsingle's output, say): a NIfTI, whose
  axes are ``(X, Y, Z, trials)``, or an HDF5 dataset (``.h5``, ``.hdf5``, or a MATLAB v7.3
  ``.mat``) whose axis order is declared (``axes``, a permutation of ``TXYZ``; NSD's HDF5 betas and
  MATLAB's ``(X, Y, Z, trials)`` arrays read as ``TZYX``);
* a mask: a 3D NIfTI on the same grid, voxels ``> 0`` kept, in the C order of its ``(X, Y, Z)``;
* a trial table: CSV with ``session`` (1-based, the position of the session's file in the list),
  ``trial`` (1-based, the volume along the trials axis), ``image`` (the stimulus' file name
  without its suffix) and ``split`` (``train`` or ``test``);
* a folder of stimulus images in any format Pillow reads, found by the table's image ids.

Every error names the file and what was expected. The checks that read only headers and the
table (:func:`problems`) run while the DAG is built, before any job.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_recon.helpers import DataError

COLUMNS = ("session", "trial", "image", "split")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AXES = "TXYZ"


# --------------------------------------------------------------------------- the trial table
def read_trials(path: str | Path, sessions: int, *, split: bool = True, image: bool = True):
    """The trial table as a DataFrame sorted by (session, trial). ``split`` / ``image``: whether
    those columns are required (``predict`` needs neither; an image column it has is used)."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"image": str, "split": str})
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV trial table ({e})") from e
    needed = ["session", "trial", *(["image"] if image else []), *(["split"] if split else [])]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; expected a header with {needed} (docs/own_data.md)")
    for col in ("session", "trial"):
        values = pd.to_numeric(table[col], errors="coerce")
        bad = table.index[values.isna() | (values != values.round()) | (values < 1)]
        if len(bad):
            raise DataError(f"{path}: {col} {table[col][bad[0]]!r} on line {bad[0] + 2}; expected an integer >= 1")
        table[col] = values.astype(np.int64)
    over = table.index[table["session"] > sessions]
    if len(over):
        raise DataError(f"{path}: session {table['session'][over[0]]} on line {over[0] + 2}, but {sessions} "
                        "session file(s) are listed; session k is the k-th file")
    dup = table.index[table.duplicated(["session", "trial"], keep=False)]
    if len(dup):
        s, t = table.loc[dup[0], ["session", "trial"]]
        raise DataError(f"{path}: trial {t} of session {s} is listed {len(dup)} times (lines "
                        f"{(dup[:5] + 2).tolist()}); expected one row per volume")
    if "image" in table.columns:
        _check_images_named(path, table, required=image)
    if split:
        _check_split(path, table)
    return table.sort_values(["session", "trial"], kind="stable").reset_index(drop=True)


def _check_images_named(path: Path, table, required: bool) -> None:
    empty = table.index[table["image"].isna() | (table["image"].astype(str).str.strip() == "")]
    if required and len(empty):
        raise DataError(f"{path}: no image id on line {empty[0] + 2}; expected the stimulus file's name")
    table["image"] = table["image"].where(table["image"].isna(), table["image"].astype(str).str.strip())


def _check_split(path: Path, table) -> None:
    wrong = table.index[~table["split"].isin(SPLITS)]
    if len(wrong):
        raise DataError(f"{path}: split {table['split'][wrong[0]]!r} on line {wrong[0] + 2}; expected one of {SPLITS}")
    both = sorted(set(table.loc[table["split"] == "test", "image"]) & set(table.loc[table["split"] == "train", "image"]))
    if both:
        raise DataError(f"{path}: image(s) {both[:10]} are both test and train ({len(both)} images); a test image "
                        "must never be trained on")
    counts = table.loc[table["split"] == "test", "image"].value_counts()
    if len(counts) and counts.iloc[0] > 3:
        raise DataError(f"{path}: test image {counts.index[0]} has {counts.iloc[0]} trials; the test protocol averages "
                        "at most 3 repeats (upstream's); mark the others train or leave them out")
    if not (table["split"] == "train").any() or not (table["split"] == "test").any():
        raise DataError(f"{path}: every trial is {table['split'].iloc[0]!r}; expected train and test trials")


def check_counts(path: str | Path, table, session_files: list, counts: list[int], complete: bool = True) -> None:
    """Each session's rows name volumes its file has; with ``complete`` (a dataset, not predict's
    selection of volumes) they number them exactly: trials 1..n, once each."""
    for k, (file, n) in enumerate(zip(session_files, counts), start=1):
        trials = table.loc[table["session"] == k, "trial"].to_numpy()
        if not complete and len(trials) and trials.max() > n:
            raise DataError(f"{path}: trial {trials.max()} of session {k}, but {file} holds {n} volumes")
        if complete and (len(trials) != n or (len(trials) and trials.max() > n)):
            raise DataError(f"{path}: session {k} lists {len(trials)} trial(s) (largest {trials.max() if len(trials) else '-'}), "
                            f"but {file} holds {n} volumes; expected one row per volume, trials 1..{n}")


# --------------------------------------------------------------------------- volumes and mask
def read_mask(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(X, Y, Z)`` mask (values > 0; NaN counts as 0) and its affine."""
    import nibabel as nib

    path = _need(path, "mask")
    img = nib.load(str(path))
    volume = np.nan_to_num(np.asarray(img.get_fdata()), nan=0.0)
    if volume.ndim != 3:
        raise DataError(f"{path}: mask of shape {volume.shape}, expected a 3D NIfTI (X, Y, Z)")
    if not (volume > 0).any():
        raise DataError(f"{path}: no voxel > 0; expected the voxels to keep marked > 0")
    return volume > 0, img.affine


def volume_header(path: str | Path, axes: str = "TZYX", key: str = "betas") -> tuple[tuple, int, np.ndarray | None]:
    """Grid ``(X, Y, Z)``, trial count and affine (None for HDF5) of a betas file, from its header."""
    path = _need(path, "betas")
    if _is_hdf5(path):
        ds_shape = _h5_shape(path, key)
        order = _check_axes(axes, path)
        shape = dict(zip(order, ds_shape))
        return (shape["X"], shape["Y"], shape["Z"]), shape["T"], None
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as e:  # nibabel raises several types for a file that is not an image
        raise DataError(f"{path}: not a readable NIfTI ({e})") from e
    if len(img.shape) != 4:
        raise DataError(f"{path}: betas of shape {img.shape}, expected a 4D NIfTI (X, Y, Z, trials)")
    return tuple(img.shape[:3]), int(img.shape[3]), img.affine


def check_grid(betas: str | Path, header: tuple, mask_path: str | Path, mask: np.ndarray, affine) -> None:
    """The betas' grid (and, for NIfTI, its affine) is the mask's."""
    grid, _, betas_affine = header
    if tuple(grid) != mask.shape:
        raise DataError(f"{betas}: grid (X, Y, Z) = {tuple(grid)}, but the mask {mask_path} has {mask.shape}; "
                        "expected the mask on the betas' own grid")
    if betas_affine is not None and not np.allclose(betas_affine, affine, atol=1e-3):
        raise DataError(f"{betas}: affine {np.round(betas_affine, 3).tolist()} differs from the mask {mask_path}'s "
                        f"{np.round(affine, 3).tolist()}; expected the mask resampled to the betas' grid")


def read_volumes(path: str | Path, mask: np.ndarray, axes: str = "TZYX", key: str = "betas") -> np.ndarray:
    """``(trials, voxels)`` float32 of the voxels in ``mask`` (C order of ``(X, Y, Z)``)."""
    path = _need(path, "betas")
    if _is_hdf5(path):
        return _read_h5(path, mask, _check_axes(axes, path), key)
    import nibabel as nib

    data = np.asanyarray(nib.load(str(path)).dataobj)
    return data.reshape(-1, data.shape[3])[mask.reshape(-1)].T.astype(np.float32)


def _read_h5(path: Path, mask: np.ndarray, axes: str, key: str) -> np.ndarray:
    """Only the mask's bounding box of an HDF5 dataset in axis order ``axes``, as (trials, voxels) in
    (X, Y, Z) C order: as raw_nsd reads NSD's HDF5 betas (reading the whole dataset took 9.5 s
    against 6.5 s for one NSD-size session with NSD's chunks: bench/bench_own.py)."""
    import h5py

    lo, hi = np.argwhere(mask).min(0), np.argwhere(mask).max(0) + 1
    box = dict(zip("XYZ", (slice(a, b) for a, b in zip(lo, hi))), T=slice(None))
    with h5py.File(path, "r") as f:
        data = f[key][tuple(box[a] for a in axes)].transpose([axes.index(a) for a in "TXYZ"])   # trials first:
    inside = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]                     # moving them last cost 1.4x
    return data.reshape(len(data), -1)[:, inside.reshape(-1)].astype(np.float32)


def check_volumes(path: str | Path, rows: np.ndarray) -> None:
    """No volume holds NaN or Inf inside the mask, and none is constant there (a blank or missing
    trial): either would poison the z-score of every voxel."""
    bad = np.flatnonzero(~np.isfinite(rows).all(1))
    if len(bad):
        raise DataError(f"{path}: volume(s) {(bad[:10] + 1).tolist()} (trial, 1-based) hold NaN or Inf inside the "
                        f"mask ({len(bad)} volumes); expected finite betas in every masked voxel")
    flat = np.flatnonzero(rows.max(1) == rows.min(1))
    if len(flat):
        raise DataError(f"{path}: volume(s) {(flat[:10] + 1).tolist()} (trial, 1-based) are constant inside the mask "
                        f"(value {rows[flat[0], 0]}); expected a beta map (a missing trial? drop its row and volume)")


# --------------------------------------------------------------------------- images
def find_images(folder: str | Path, ids) -> dict[str, Path]:
    """``{image id: file}`` of the folder's images named ``<id><suffix>``; an error lists ids with no
    file, or with more than one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder of stimulus images")
    files: dict[str, list[Path]] = {}
    for f in folder.iterdir():
        if f.suffix.lower() in IMAGE_SUFFIXES:
            files.setdefault(f.stem, []).append(f)
    ids = sorted(set(ids))
    missing = [i for i in ids if i not in files]
    if missing:
        raise DataError(f"{folder}: no image file for id(s) {missing[:10]} ({len(missing)} of {len(ids)}); expected "
                        f"<id> plus one of {IMAGE_SUFFIXES}")
    twice = [i for i in ids if len(files[i]) > 1]
    if twice:
        raise DataError(f"{folder}: id {twice[0]} has {len(files[twice[0]])} files {sorted(map(str, files[twice[0]]))}; "
                        "expected one")
    return {i: files[i][0] for i in ids}


def load_image(path: Path, size: int, method: str, antialias: bool) -> np.ndarray:
    """One stimulus as ``(3, size, size)`` float16 in [0, 1]: RGB, centre-cropped to a square (NSD's
    stimuli are square crops), resized as the images file's are (preprocess.resize_images)."""
    from PIL import Image, UnidentifiedImageError

    from fmri_recon.data import preprocess

    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from e
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = rgb[top:top + side, left:left + side]
    return preprocess.resize_images(square[None], size, method, antialias)[0]


# --------------------------------------------------------------------------- every cheap check
def problems(settings: dict, *, split: bool = True, image: bool = True, images: str | None = None) -> list[str]:
    """The errors of an input that need no volume read (DAG build time): the table, the files, the
    mask's grid and the trial counts, the image files. ``settings``: sessions, mask, trials, axes, key."""
    try:
        check_headers(settings, split=split, image=image, images=images)
    except DataError as e:
        return [str(e)]
    return []


def check_headers(settings: dict, *, split: bool = True, image: bool = True, images: str | None = None):
    """Run the header checks; returns the table, mask, affine and trial counts. A table without
    ``split`` is predict's: any volumes of the sessions, not necessarily all."""
    files = list(settings["sessions"])
    table = read_trials(_need(settings["trials"], "trial table"), len(files), split=split, image=image)
    mask, affine = read_mask(settings["mask"])
    counts = []
    for f in files:
        header = volume_header(f, settings["axes"], settings["key"])
        check_grid(f, header, settings["mask"], mask, affine)
        counts.append(header[1])
    check_counts(settings["trials"], table, files, counts, complete=split)
    if images and "image" in table.columns:
        find_images(images, table["image"].dropna())
    return table, mask, affine, counts


def _need(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file")
    return path


def _is_hdf5(path: Path) -> bool:
    """HDF5, or MATLAB's v7.3 .mat (HDF5 inside: GLMsingle's MATLAB output, axes TZYX as h5py reads them)."""
    return path.suffix.lower() in (".h5", ".hdf5", ".mat")


def _h5_shape(path: Path, key: str) -> tuple:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DataError(f"{path}: no dataset {key!r} (found {sorted(f.keys())}); set own.hdf5_key")
            shape = f[key].shape
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from e
    if len(shape) != 4:
        raise DataError(f"{path}: dataset {key!r} of shape {shape}, expected 4 axes ({AXES} in some order)")
    return shape


def _check_axes(axes: str, path: Path) -> str:
    if sorted(axes) != sorted(AXES):
        raise DataError(f"{path}: hdf5_axes = {axes!r}, expected a permutation of {AXES!r} (NSD's: 'TZYX')")
    return axes
