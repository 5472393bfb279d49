"""One subject rebuilt from NSD's raw files: its betas HDF5 and its ``wds/`` shards, as the
released ones were made, and the statistics they were z-scored with (for ``predict``) (the recipe: fmri_recon.data.preprocess; the readers: raw_nsd)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fmri_recon.data import behaviour, nsd, preprocess, raw_nsd

log = logging.getLogger(__name__)


def build_subject(raw: dict, subject: int, sessions: int, settings: dict, data_dir: str | Path, shared: np.ndarray,
                  origin: dict | None = None) -> dict:
    """Write one subject's betas file and shards under ``data_dir`` from the raw files ``raw``
    (``{"betas": [per session], "roi", "responses"}``); returns what was made. ``origin`` (the
    sources, settings and code: ``provenance``) is kept in the betas file's attributes."""
    table = raw_nsd.read_responses(raw["responses"], sessions)
    b, tps = behaviour.from_responses(table, shared, str(raw["responses"]))
    if b[:, nsd.COL_SUBJECT].min() != subject or b[:, nsd.COL_SUBJECT].max() != subject:
        raise nsd.DataError(f"{raw['responses']}: SUBJECT column holds {np.unique(b[:, 1]).tolist()}, expected {subject}")
    mask = raw_nsd.read_roi(raw["roi"], settings["roi_labels"])
    betas = np.empty((sessions * tps, int(mask.sum())), np.float32)
    for k, path in enumerate(raw["betas"]):
        log.info("subject %d: session %d/%d (%s)", subject, k + 1, sessions, path)
        rows = raw_nsd.read_betas(path, mask)
        if len(rows) != tps:
            raise nsd.DataError(f"{path}: {len(rows)} trials, but responses.tsv has {tps} in session {k + 1}")
        betas[k * tps:(k + 1) * tps] = rows
    train_rows = np.flatnonzero(b[:, nsd.COL_SHARED1000] == 0)
    stats = preprocess.zscore_statistics(betas, train_rows, path=str(raw["betas"][0]))
    betas = preprocess.normalise(betas, train_rows, statistics=stats)
    out = Path(data_dir)
    preprocess.write_betas(out / nsd.betas_file(subject), betas, origin)
    preprocess.write_zscore(out / preprocess.zscore_file(subject), mask, raw_nsd.read_affine(raw["roi"]), *stats)
    session = behaviour.sessions_of_rows(len(b), tps)
    behaviour.write_shards(out, subject, behaviour.context_arrays(b, session), session)
    return {"subject": subject, "sessions": sessions, "trials": len(b), "voxels": betas.shape[1],
            "train_trials": len(train_rows), "test_trials": int(len(b) - len(train_rows)),
            "image_ids": b[:, nsd.COL_IMAGE].astype(np.int64)}
