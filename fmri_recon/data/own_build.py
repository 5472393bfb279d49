"""A lab's own scans -> the pscotti/mindeyev2 layout (``dataset: own``): the same files the
preprocessing of raw NSD writes (fmri_recon.data.preprocess, behaviour), so every later stage reads
them unchanged, with its ``zscore/subjNN.npz`` (preprocess.zscore_file), plus ``own/stimuli.csv``:
the row of the images file of each image id (sorted ids), and its file.

The recipe is the release's (docs/preprocessing.md): voxels of the mask in C order, rows in
(session, trial) order, one z-score per voxel with the unbiased std over the train trials of every
session. Behaviour columns the table does not give (run, time, responses) are -1, the layout's
"missing".
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fmri_recon import helpers
from fmri_recon.data import behaviour, nsd, own_input, preprocess

log = logging.getLogger(__name__)
STIMULI_FILE = "own/stimuli.csv"


def settings(config: dict) -> dict:
    """The ``own`` block as own_input reads it."""
    own = config["own"]
    return {"sessions": own["sessions"], "mask": own["mask"], "trials": own["trials"], "images": own["images"],
            "axes": own["hdf5_axes"], "key": own["hdf5_key"]}


def config_problems(config: dict, subject_sessions: dict[int, int]) -> list[str]:
    """dataset = own: every input named, one subject (the config's), no more sessions than given;
    then the checks of the input itself that read no volume (own_input.problems)."""
    if config["dataset"] != "own":
        return []
    own = config["own"]
    problems = [f"config: dataset = own needs own.{k} (docs/own_data.md)" for k in ("sessions", "mask", "trials", "images")
                if not own[k]]
    for s, n in subject_sessions.items():
        if s != config["subject"]:
            problems.append(f"config: subject {s} is used, but dataset = own holds subject {config['subject']} only")
        elif n > len(own["sessions"]):
            problems.append(f"config: {n} sessions of subject {s} are used, but own.sessions lists {len(own['sessions'])}")
    return problems or own_input.problems(settings(config), images=own["images"])


def outputs(subject: int, sessions: int) -> list[str]:
    """Every layout file ``build`` writes, relative to the data directory."""
    return [*preprocess.subject_outputs(subject, sessions), nsd.IMAGES_FILE, nsd.EVAL_IMAGES, STIMULI_FILE,
            preprocess.zscore_file(subject)]


def build(settings: dict, subject: int, data_dir: str | Path, resize: dict, origin: dict | None = None) -> dict:
    """Write the layout of one subject's own data under ``data_dir``; returns what was made."""
    data_dir = Path(data_dir)
    table, mask, affine, _ = own_input.check_headers(settings, images=settings["images"])
    betas = _read_betas(settings, table, mask)
    ids = np.array(sorted(table["image"].unique()))
    b = behaviour_rows(table, subject, ids)
    train_rows = np.flatnonzero(b[:, nsd.COL_SHARED1000] == 0)
    stats = preprocess.zscore_statistics(betas, train_rows, path=str(settings["sessions"][0]))
    betas = preprocess.normalise(betas, train_rows, statistics=stats)
    preprocess.write_betas(data_dir / nsd.betas_file(subject), betas, origin)
    session = b[:, nsd.COL_SESSION].astype(np.int64) - 1
    behaviour.write_shards(data_dir, subject, behaviour.context_arrays(b, session), session)
    files = own_input.find_images(settings["images"], ids)
    write_images(data_dir, ids, files, resize)
    preprocess.write_eval_images(data_dir, subject)
    preprocess.write_zscore(data_dir / preprocess.zscore_file(subject), mask, affine, *stats)
    return {"subject": subject, "sessions": len(settings["sessions"]), "trials": len(b), "voxels": betas.shape[1],
            "images": len(ids), "test_images": int(table.loc[table["split"] == "test", "image"].nunique()),
            "train_trials": len(train_rows)}


def _read_betas(settings: dict, table, mask: np.ndarray) -> np.ndarray:
    """Every session's masked volumes, rows in (session, trial) order, each checked for NaN and blanks."""
    parts = []
    for k, path in enumerate(settings["sessions"], start=1):
        log.info("session %d/%d: %s", k, len(settings["sessions"]), path)
        rows = own_input.read_volumes(path, mask, settings["axes"], settings["key"])
        own_input.check_volumes(path, rows)
        parts.append(rows[table.loc[table["session"] == k, "trial"].to_numpy() - 1])
    return np.concatenate(parts)


def behaviour_rows(table, subject: int, ids: np.ndarray) -> np.ndarray:
    """The (N, 17) behaviour rows of the table (sorted by session, trial): the image's row of the
    images file, subject, session, trial, the betas row (column 5), test flag; -1 elsewhere."""
    b = -np.ones((len(table), nsd.BEHAV_COLUMNS))
    b[:, nsd.COL_IMAGE] = np.searchsorted(ids, table["image"].to_numpy())
    b[:, nsd.COL_SUBJECT] = subject
    b[:, nsd.COL_SESSION] = table["session"].to_numpy()
    b[:, nsd.COL_TRIAL] = table["trial"].to_numpy()
    b[:, nsd.COL_GLOBAL_TRIAL] = np.arange(len(table))
    b[:, nsd.COL_SHARED1000] = (table["split"] == "test").to_numpy()
    return b


def write_images(data_dir: Path, ids: np.ndarray, files: dict, resize: dict, size: int = preprocess.IMAGE_SIZE) -> None:
    """The images file (one row per sorted id, resized as NSD's) and ``own/stimuli.csv``, one image at a time."""
    import csv

    import h5py

    with helpers.atomic_output(data_dir / nsd.IMAGES_FILE) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("images", (len(ids), 3, size, size), np.float16, chunks=(1, 3, size, size))
        for i, image_id in enumerate(ids):
            ds[i] = own_input.load_image(files[image_id], size, resize["image_resize"], resize["image_antialias"])
    with helpers.atomic_output(data_dir / STIMULI_FILE) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "image", "file"])
        writer.writerows([i, image_id, str(files[image_id])] for i, image_id in enumerate(ids))


def read_stimuli(data_dir: str | Path):
    """``own/stimuli.csv`` as a DataFrame (row, image, file)."""
    import pandas as pd

    return pd.read_csv(helpers.need(Path(data_dir) / STIMULI_FILE), dtype={"image": str})
