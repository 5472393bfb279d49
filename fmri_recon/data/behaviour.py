"""The behaviour side of the pscotti/mindeyev2 layout: the 17 columns of every trial, the past,
future and repeat context of each trial, and the ``wds/`` shards that hold them.

One definition for both writers of the layout: the synthetic dataset and the preprocessing of
raw NSD (``responses.tsv``). Facts from upstream's ``src/dataset_creation.ipynb`` (MindEyeV2
c184718) and ../docs/preprocessing.md: column 5 is ``(SESSION-1) * trials_per_session + row in
the session``; past row k is trial i-(k+1) and future row k is trial i+k+1 of the same session
(-1 rows where there is none); the olds are the image's other trials anywhere in the subject's
data, in chronological order, compacted; keys run ``sample%09d`` with one counter across the
train shards and one for the test shard.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fmri_recon.data import nsd

CONTEXT = 15             # past and future trials per sample
# responses.tsv columns behind behaviour columns 7-15 (NaN -> -1), in column order
RESPONSE_COLUMNS = ("ISOLD", "ISCORRECT", "RT", "CHANGEMIND", "ISOLDCURRENT", "ISCORRECTCURRENT",
                    "TOTAL1", "TOTAL2", "BUTTON")
NEEDED = ("SUBJECT", "SESSION", "RUN", "TRIAL", "73KID", "TIME", *RESPONSE_COLUMNS)


def from_responses(table, shared1000: np.ndarray, path: str = "responses.tsv") -> tuple[np.ndarray, int]:
    """The (N, 17) behaviour rows of a subject's ``responses.tsv`` (a pandas DataFrame, rows in
    chronological order) and its trials per session (NSD: 750, every session alike)."""
    missing = [c for c in NEEDED if c not in table.columns]
    if missing:
        raise nsd.DataError(f"{path}: no column(s) {missing}; expected NSD's responses.tsv header {list(NEEDED)}")
    session = table["SESSION"].to_numpy(np.int64)
    if np.any(np.diff(session) < 0):
        raise nsd.DataError(f"{path}: SESSION goes backwards; expected rows in chronological order")
    sessions, counts = np.unique(session, return_counts=True)
    if len(set(counts)) != 1:
        raise nsd.DataError(f"{path}: sessions {sessions.tolist()} have {counts.tolist()} trials; expected the same "
                            "number in every session (NSD: 750)")
    tps = int(counts[0])
    image = table["73KID"].to_numpy(np.int64) - 1                  # 1-based in NSD
    if image.min() < 0 or image.max() >= len(shared1000):
        raise nsd.DataError(f"{path}: 73KID {image.max() + 1 if image.min() >= 0 else image.min() + 1} outside "
                            f"1..{len(shared1000)}")
    row_in_session = np.arange(len(table)) - np.searchsorted(session, session)
    b = np.empty((len(table), nsd.BEHAV_COLUMNS))
    b[:, 0], b[:, 1] = image, table["SUBJECT"].to_numpy()
    b[:, 2], b[:, 3], b[:, 4] = session, table["RUN"].to_numpy(), table["TRIAL"].to_numpy()
    b[:, 5] = (session - 1) * tps + row_in_session
    b[:, 6] = table["TIME"].to_numpy(np.float64).astype(np.int64)  # QUIRK: upstream's int(TIME), a day index
    for col, name in enumerate(RESPONSE_COLUMNS, start=7):
        b[:, col] = np.nan_to_num(table[name].to_numpy(np.float64), nan=-1.0)
    b[:, 16] = shared1000[image]
    return b, tps


def sessions_of_rows(total: int, trials_per_session: int) -> np.ndarray:
    """The 0-based session of each of ``total`` rows when every session has the same trial count (NSD)."""
    return np.arange(total) // trials_per_session


def context_arrays(b: np.ndarray, session: np.ndarray) -> dict[str, np.ndarray]:
    """The four arrays of every trial's sample: behav, past (i-1 .. i-15), future (i+1 .. i+15), olds.
    ``session`` is each row's 0-based session (rows in time order; sessions may differ in length)."""
    total, session = len(b), np.asarray(session)
    padded = np.concatenate([b, -np.ones((1, nsd.BEHAV_COLUMNS))])   # index ``total`` -> the -1 row
    t = np.arange(total)[:, None]
    offsets = np.arange(1, CONTEXT + 1)

    def same_session(u):
        inside = (u >= 0) & (u < total)
        return np.where(inside & (session[np.clip(u, 0, total - 1)] == session[t]), u, total)

    olds = -np.ones((total, 3, nsd.BEHAV_COLUMNS))
    order = np.argsort(b[:, 0], kind="stable")                       # trials grouped by image, in time order
    bounds = np.flatnonzero(np.diff(b[order, 0])) + 1
    for group in np.split(order, bounds):
        for i in group:
            others = group[group != i][:3]
            olds[i, :len(others)] = b[others]
    return {"behav": b[:, None], "past_behav": padded[same_session(t - offsets)],
            "future_behav": padded[same_session(t + offsets)], "olds_behav": olds}


def write_shards(data_dir: str | Path, subject: int, arrays: dict[str, np.ndarray], session: np.ndarray) -> list[Path]:
    """The subject's ``wds/`` shards: one train tar per session (its non-shared1000 trials), the
    test tar of every shared1000 trial and the older one of the sessions before the held-out ones.
    ``session``: each row's 0-based session."""
    b, session = arrays["behav"][:, 0], np.asarray(session)
    is_test = b[:, nsd.COL_SHARED1000] == 1
    data_dir, written, key = Path(data_dir), [], 0
    for k in range(int(session.max()) + 1):
        rows = (session == k) & ~is_test
        written.append(data_dir / nsd.train_tar(subject, k))
        nsd.write_tar(written[-1], _take(arrays, rows), first_key=key)
        key += int(rows.sum())
    written.append(data_dir / nsd.test_tar(subject, True))
    nsd.write_tar(written[-1], _take(arrays, is_test))
    old = is_test & (session < nsd.old_test_sessions(int(session.max()) + 1))
    written.append(data_dir / nsd.test_tar(subject, False))
    nsd.write_tar(written[-1], _take(arrays, old))
    return written


def _take(arrays: dict, mask: np.ndarray) -> dict:
    return {k: v[mask] for k, v in arrays.items()}
