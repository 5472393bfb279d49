"""The pscotti/mindeyev2 on-disk layout, defined once: paths, readers, writers, checks.

Every stage and the synthetic generator go through this module, so the real data,
the synthetic data and a dataset someone else wrote are read the same way. Readers
never load a whole HDF5 file: rows are fetched by sorted unique index, as HDF5 fancy
indexing requires, then put back in the caller's order.

Facts (docs/upstream.md §1): webdataset tars of samples with four float64
arrays of 17 behaviour columns (-1 = missing); betas HDF5 dataset ``betas`` (trials x
voxels) indexed by behaviour column 5; images HDF5 dataset ``images`` (N,3,224,224)
in [0,1] indexed by column 0.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
from fmri_recon import helpers
from fmri_recon.data import normalise
from fmri_recon.helpers import DataError  # the layout's error: nsd.DataError

BEHAV_COLUMNS = 17
COL_IMAGE, COL_SUBJECT, COL_SESSION, COL_RUN, COL_TRIAL, COL_GLOBAL_TRIAL = range(6)
COL_SHARED1000 = 16
TRIALS_PER_SESSION = 750  # NSD; the betas row of a trial is (session-1)*750 + index

# Arrays of one webdataset sample and their shapes (rows x 17 columns).
SAMPLE_ARRAYS = {"behav": 1, "past_behav": 15, "future_behav": 15, "olds_behav": 3}

IMAGES_FILE = "coco_images_224_float16.hdf5"
EVAL_IMAGES = "evals/all_images.pt"
EVAL_CAPTIONS = "evals/all_captions.pt"
EVAL_GIT_CAPTIONS = "evals/all_git_generated_captions.pt"
EVAL_FILES = (EVAL_IMAGES, EVAL_CAPTIONS, EVAL_GIT_CAPTIONS)
MASKS_FILE = "brain_region_masks.hdf5"   # voxel masks per subject (brain correlation)
# Its boolean datasets per subject group, in upstream's order (nsd_general = all visual cortex).
MASK_REGIONS = ("nsd_general", "V1", "V2", "V3", "V4", "higher_vis")


def mask_group(subject: int | str) -> str:
    """The group of ``subject`` in :data:`MASKS_FILE`: ``subj0X`` (a ``subj..`` name passes as is)."""
    if isinstance(subject, str) and subject.startswith("subj"):
        return subject
    return f"subj{int(subject):02d}"




# --------------------------------------------------------------------------- paths
def betas_file(subject: int) -> str:
    return f"betas_all_subj{subject:02d}_fp32_renorm.hdf5"


def train_tar(subject: int, session_index: int) -> str:
    """Tar of session ``session_index + 1`` (0-based file names, as on the hub)."""
    return f"wds/subj{subject:02d}/train/{session_index}.tar"


def test_tar(subject: int, new_test: bool = True) -> str:
    return f"wds/subj{subject:02d}/{'new_test' if new_test else 'test'}/0.tar"


def old_test_sessions(num_sessions: int) -> int:
    """Sessions (the first ones) of the older test tar: all but the last 3, which NSD held out for
    the Algonauts challenge until 2023 (40 -> 37), and at least one."""
    return max(num_sessions - 3, 1)


def required_files(subject: int, num_sessions: int, new_test: bool = True, captions: bool = True) -> list[str]:
    """Every hub file a run on ``subject`` with its first ``num_sessions`` sessions reads (the test
    images' reference captions only with ``captions``: a lab's own data have none)."""
    return [
        betas_file(subject),
        *(train_tar(subject, k) for k in range(num_sessions)),
        test_tar(subject, new_test),
        IMAGES_FILE,
        *(EVAL_FILES if captions else (EVAL_IMAGES,)),
    ]


# --------------------------------------------------------------------------- tars
def write_tar(path: str | Path, samples: dict[str, np.ndarray], first_key: int = 0) -> None:
    """Write webdataset samples ``sample%09d`` (numbered from ``first_key``: upstream's train keys
    run on across a subject's sessions) with ``{name}.npy`` float64 arrays, atomically."""
    import webdataset as wds

    path = Path(path)
    n = len(samples["behav"])
    for name, rows in SAMPLE_ARRAYS.items():
        if samples[name].shape != (n, rows, BEHAV_COLUMNS):
            raise ValueError(f"{name}: expected shape ({n}, {rows}, {BEHAV_COLUMNS}), got {samples[name].shape}")
    with helpers.atomic_output(path) as tmp, wds.TarWriter(str(tmp)) as sink:
        for i in range(n):
            sample = {"__key__": f"sample{first_key + i:09d}"}
            sample.update({f"{k}.npy": np.asarray(samples[k][i], dtype=np.float64) for k in SAMPLE_ARRAYS})
            sink.write(sample)


def read_tar(path: str | Path) -> dict[str, np.ndarray]:
    """All samples of one tar as arrays ``{name: (N, rows, 17)}``, checked against the format."""
    import webdataset as wds

    path = helpers.need(Path(path))
    arrays: dict[str, list] = {k: [] for k in SAMPLE_ARRAYS}
    try:
        # every process reads the whole tar (each rank of a multi-GPU training needs every trial):
        # no node or worker split, which webdataset would otherwise demand under torchrun
        dataset = wds.WebDataset(str(path), shardshuffle=False, handler=wds.reraise_exception,
                                 nodesplitter=None, workersplitter=None)
        for sample in dataset.decode():
            _check_sample(path, sample)
            for k in SAMPLE_ARRAYS:
                arrays[k].append(sample[f"{k}.npy"])
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: unreadable or truncated tar ({e}); delete it and fetch it again") from e
    if not arrays["behav"]:
        raise DataError(f"{path}: no samples (expected webdataset samples with a behav.npy array)")
    return {k: np.stack(v) for k, v in arrays.items()}


def _check_sample(path: Path, sample: dict) -> None:
    key = sample.get("__key__")
    for name, rows in SAMPLE_ARRAYS.items():
        arr = sample.get(f"{name}.npy")
        if arr is None:
            raise DataError(f"{path}: sample {key} has no {name}.npy (truncated tar, or not the mindeyev2 format)")
        if arr.shape != (rows, BEHAV_COLUMNS):
            raise DataError(f"{path}: sample {key} {name}.npy has shape {arr.shape}, expected ({rows}, {BEHAV_COLUMNS})")


# --------------------------------------------------------------------------- HDF5
def h5_dataset_info(path: str | Path, name: str, ndim: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of dataset ``name`` in ``path`` (reads the header only)."""
    path = helpers.need(Path(path))
    try:
        with h5py.File(path, "r") as f:
            if name not in f:
                raise DataError(f"{path}: no HDF5 dataset {name!r} (found {sorted(f.keys())})")
            ds = f[name]
            shape, dtype = ds.shape, ds.dtype
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from e
    if len(shape) != ndim:
        raise DataError(f"{path}: dataset {name!r} has shape {shape}, expected {ndim} dimensions")
    return shape, dtype


def read_rows(path: str | Path, name: str, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (any order, repeats allowed) of dataset ``name``, without loading the rest."""
    index = np.asarray(index, dtype=np.int64)
    unique, inverse = np.unique(index, return_inverse=True)
    with h5py.File(helpers.need(Path(path)), "r") as f:
        ds = f[name]
        if len(unique) and (unique[0] < 0 or unique[-1] >= ds.shape[0]):
            raise DataError(f"{path}: row {unique[-1] if unique[-1] >= ds.shape[0] else unique[0]} "
                            f"requested from {name!r} with {ds.shape[0]} rows")
        rows = _read_sorted(ds, unique)
    return rows[inverse.reshape(-1)]


def _read_sorted(ds, unique: np.ndarray) -> np.ndarray:
    """Rows ``unique`` (sorted, distinct) of an h5py dataset: one slice read per run of consecutive
    rows. Not ``ds[unique]``: h5py's list indexing took 195 ms for 24 scattered images where this
    takes 3 ms (bench/bench_images.py)."""
    out = np.empty((len(unique), *ds.shape[1:]), ds.dtype)
    breaks = np.flatnonzero(np.diff(unique) != 1) + 1
    for start, end in zip(np.r_[0, breaks], np.r_[breaks, len(unique)]):
        if end > start:
            ds.read_direct(out, np.s_[unique[start]:unique[end - 1] + 1], np.s_[start:end])
    return out


def read_images(data_dir: str | Path, image_ids: np.ndarray) -> np.ndarray:
    """Images (n,3,H,W) float16 in [0,1] by 0-based 73k index, in the order given."""
    return read_rows(Path(data_dir) / IMAGES_FILE, "images", image_ids)


def read_voxels(data_dir: str | Path, subject: int, trial_rows: np.ndarray) -> np.ndarray:
    """Betas (n, voxels) float32 for global trial rows (behaviour column 5), in the order given."""
    return read_rows(Path(data_dir) / betas_file(subject), "betas", trial_rows).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- test repeats
def test_repeats(behav: np.ndarray, path: str = "test tar") -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique test image ids and, per image, three trial positions into ``behav``.

    Upstream's rule: 1 repeat -> [a, a, a]; 2 repeats -> [a, b, a]; 3 -> as they are.
    """
    ids = behav[:, COL_IMAGE].astype(np.int64)
    unique = np.unique(ids)
    positions = np.empty((len(unique), 3), dtype=np.int64)
    for i, image in enumerate(unique):
        locs = np.flatnonzero(ids == image)
        if len(locs) > 3:
            raise DataError(f"{path}: image {image} has {len(locs)} test trials, expected at most 3")
        positions[i] = [locs[0], locs[-1], locs[0]] if len(locs) == 2 else np.resize(locs, 3)
    return unique, positions


# --------------------------------------------------------------------------- a run's split
@dataclass
class Split:
    """What a run on one subject reads: behaviour rows of its sessions and its test set."""

    data_dir: Path
    subject: int
    train_behav: np.ndarray          # (N, 17) behav rows of the first num_sessions sessions
    test_behav: np.ndarray           # (M, 17) behav rows of the test tar
    test_images: np.ndarray          # (n,) sorted unique 73k ids of the test set
    test_trials: np.ndarray          # (n, 3) betas rows of the 3 repeats used per image
    num_voxels: int
    num_images: int                  # rows of the images HDF5
    repeat_counts: dict = field(default_factory=dict)
    normalisation: str = "all_sessions"   # how voxels() reads the betas (fmri_recon.data.normalise)

    def __post_init__(self):
        normalise.check(self.normalisation)

    @property
    def train_images(self) -> np.ndarray:
        return self.train_behav[:, COL_IMAGE].astype(np.int64)

    @property
    def train_trials(self) -> np.ndarray:
        return self.train_behav[:, COL_GLOBAL_TRIAL].astype(np.int64)

    @property
    def trials_per_session(self) -> int:
        """Trials of the first session, train and test together (NSD: 750)."""
        sessions = np.concatenate([self.train_behav[:, COL_SESSION], self.test_behav[:, COL_SESSION]])
        return int((sessions == sessions.min()).sum())

    @cached_property
    def train_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-voxel mean and std (ddof=1, float64) of this run's train trials, read in chunks
        once per Split: what ``normalisation: train_sessions`` standardises with."""
        return normalise.train_statistics(self.data_dir / betas_file(self.subject), self.train_trials,
                                          subject=self.subject)

    def voxels(self, rows: np.ndarray) -> np.ndarray:
        """Betas (n, voxels) float32 of global trial rows ``rows`` as this run reads them: the file
        as it is (``all_sessions``), or re-standardised with the train trials' statistics
        (``train_sessions``; equal to z-scoring the raw betas with them, see fmri_recon.data.normalise)."""
        vox = read_voxels(self.data_dir, self.subject, rows)
        if self.normalisation == "train_sessions":
            vox = normalise.apply(vox, *self.train_statistics)
        return vox

    def test_voxels(self) -> np.ndarray:
        """Betas (n, 3, voxels) float32 of the three repeats of each test image (see ``voxels``)."""
        return self.voxels(self.test_trials.ravel()).reshape(len(self.test_images), 3, -1)

    def all_images(self) -> np.ndarray:
        """Sorted unique image ids of train and test: what the CLIP targets must cover."""
        return np.union1d(self.train_images, self.test_images)

    def summary(self) -> dict:
        return {
            "subject": self.subject,
            "num_voxels": self.num_voxels,
            "num_images_file": self.num_images,
            "train_trials": int(len(self.train_behav)),
            "train_unique_images": int(len(np.unique(self.train_images))),
            "test_trials": int(len(self.test_behav)),
            "test_images": int(len(self.test_images)),
            "test_repeat_counts": {str(k): int(v) for k, v in sorted(self.repeat_counts.items())},
        }


def open_split(data_dir: str | Path, subject: int, num_sessions: int, new_test: bool = True,
               normalisation: str = "all_sessions") -> Split:
    """Read and check the tars of a run, and the headers of its HDF5 files; its voxels are read
    with ``normalisation`` (fmri_recon.data.normalise: all_sessions or train_sessions).

    Everything is checked against everything else before any expensive stage runs:
    shapes and dataset names, trial rows inside the betas file, image ids inside the
    images file. Errors name the file and what was expected.
    """
    data_dir, normalisation = Path(data_dir), normalise.check(normalisation)
    train = [read_tar(data_dir / train_tar(subject, k))["behav"][:, 0] for k in range(num_sessions)]
    train_behav = np.concatenate(train)
    test_path = data_dir / test_tar(subject, new_test)
    test_behav = read_tar(test_path)["behav"][:, 0]
    test_images, positions = test_repeats(test_behav, str(test_path))
    counts = np.bincount((test_behav[:, COL_IMAGE][:, None] == test_images[None]).sum(0), minlength=4)

    betas_path = data_dir / betas_file(subject)
    (n_rows, n_vox), _ = h5_dataset_info(betas_path, "betas", 2)
    trials = np.concatenate([train_behav[:, COL_GLOBAL_TRIAL], test_behav[:, COL_GLOBAL_TRIAL]]).astype(np.int64)
    if trials.min() < 0 or trials.max() >= n_rows:
        raise DataError(f"{betas_path}: 'betas' has {n_rows} trial rows but the tars of subject {subject} "
                        f"reference global trial {trials.max()} (behav column 5); expected shape "
                        f"(>= {trials.max() + 1}, voxels): betas and tars do not belong together")

    images_path = data_dir / IMAGES_FILE
    (n_img, c, h, w), _ = h5_dataset_info(images_path, "images", 4)
    if c != 3 or h != w:
        raise DataError(f"{images_path}: 'images' has shape {(n_img, c, h, w)}, expected (N, 3, S, S)")
    ids = np.concatenate([train_behav[:, COL_IMAGE], test_images]).astype(np.int64)
    if ids.min() < 0 or ids.max() >= n_img:
        raise DataError(f"{images_path}: 'images' has {n_img} images but the tars reference image {ids.max()} "
                        "(behav column 0)")
    return Split(data_dir, subject, train_behav, test_behav, test_images, test_behav[positions, COL_GLOBAL_TRIAL]
                 .astype(np.int64), int(n_vox), int(n_img), {k: int(v) for k, v in enumerate(counts) if v},
                 normalisation)


def images_of_runs(data_dir: str | Path, runs, new_test: bool) -> np.ndarray:
    """The sorted 73k ids of every image (train and test) of the runs ``[(subject, sessions), ...]``."""
    return np.unique(np.concatenate([open_split(data_dir, s, n, new_test).all_images() for s, n in runs]))


# --------------------------------------------------------------------------- eval files
def load_eval(data_dir: str | Path, name: str):
    """An ``evals/*.pt`` file: a tensor, or (captions) a numpy array of str as upstream saved it
    under numpy 1.x (fmri_recon.data.released reads both numpy's names, and nothing else)."""
    from fmri_recon.data import released

    return released.load(Path(data_dir) / name)


def check_finite_betas(split: Split, chunk: int = 1024) -> None:
    """Every betas row the run reads (train and test trials) is finite, read ``chunk`` rows at a
    time. A NaN would otherwise surface as a NaN loss minutes into training."""
    path = split.data_dir / betas_file(split.subject)
    rows = np.unique(np.concatenate([split.train_trials, split.test_trials.ravel()]))
    bad = []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        finite = np.isfinite(read_rows(path, "betas", part)).all(axis=1)
        bad.extend(part[~finite].tolist())
    if bad:
        raise DataError(f"{path}: 'betas' rows {bad[:20]}{' ...' if len(bad) > 20 else ''} ({len(bad)} rows) hold "
                        "NaN or Inf (a row is a global trial, behav column 5); fix or re-export the file")


def check_evals(split: Split, captions: bool = True) -> None:
    """The three ``evals/`` files match the test set: one image and one caption per test image
    (the images file alone without ``captions``)."""
    n = len(split.test_images)
    images = load_eval(split.data_dir, EVAL_IMAGES)
    if tuple(images.shape[:2]) != (n, 3) or images.ndim != 4:
        raise DataError(f"{split.data_dir / EVAL_IMAGES}: shape {tuple(images.shape)}, expected ({n}, 3, S, S) "
                        "(one image per unique test image, sorted by 73k id)")
    for name in (EVAL_CAPTIONS, EVAL_GIT_CAPTIONS) if captions else ():
        texts = load_eval(split.data_dir, name)
        if len(texts) != n:
            raise DataError(f"{split.data_dir / name}: {len(texts)} captions, expected {n} (one per test image)")
