"""A synthetic dataset in exactly the pscotti/mindeyev2 layout, for the demo and the tests.

Images are crops and photometric variations of the photographs that ship inside
scikit-image (no download). Voxels come from a known linear encoding model of simple
image features (a low-resolution colour image and a grid of edge energies) plus noise,
so a decoder can learn them. Like NSD, each subject sees the shared test images up to
three times (some fewer), and the other images in train sessions; every trial has its
own noise. The files are written through ``nsd`` so the format is defined once.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers
from fmri_recon.data import nsd

log = logging.getLogger(__name__)

# (scikit-image loader, COCO-style caption, GIT-style caption) of each source photograph.
SOURCES = [
    ("astronaut", "an astronaut in a white space suit smiling in front of a flag", "a woman in a space suit posing for a picture"),
    ("chelsea", "an orange tabby cat looking at the camera", "a cat sitting on a wooden floor"),
    ("coffee", "a cup of coffee on a saucer with a spoon", "a cup of coffee on a table"),
    ("rocket", "a rocket standing on a launch pad under a blue sky", "a space shuttle on the launch pad"),
    ("camera", "a black and white photo of a man with a camera on a tripod", "a man standing next to a camera"),
    ("grass", "a close view of green grass blades", "a field of grass"),
    ("brick", "a red brick wall with white mortar", "a brick wall with a pattern"),
    ("gravel", "a pile of small grey stones on the ground", "a close up of gravel on the ground"),
    ("hubble_deep_field", "many distant galaxies in a dark night sky", "a picture of stars in the sky"),
    ("retina", "a photo of the back of a human eye", "a red circle with a white spot"),
    ("immunohistochemistry", "a microscope image of stained cells", "a close up of a purple and brown pattern"),
    ("moon", "the surface of the moon with craters", "a black and white photo of the moon"),
    ("clock", "an old clock on a wall", "a black and white photo of a clock"),
    ("coins", "a set of old coins on a table", "a bunch of coins on a table"),
    ("stereo_motorcycle", "a red motorcycle parked in a garage", "a motorcycle parked in a room"),
]


@dataclass
class SyntheticConfig:
    """Sizes of the synthetic dataset (the ``synthetic:`` block of the config)."""

    seed: int = 0
    subjects: list = field(default_factory=lambda: [1])
    num_voxels: list = field(default_factory=lambda: [600])
    num_sessions: int = 2
    trials_per_session: int = 200
    num_images: int = 600
    num_test_images: int = 50
    fewer_repeats: float = 0.2     # fraction of test images seen once or twice instead of 3 times
    noise: float = 1.0             # trial noise std, relative to the signal std of each voxel
    semantic: float = 0.0          # weight of the semantic features (which photograph, how close) in the voxels
    session_drift: float = 0.1     # std of each voxel's change of baseline from session to session
    image_size: int = 224
    raw_image_size: int = 224      # the stimuli as imgBrick holds them (NSD: 425), resized to image_size

    def __post_init__(self):
        if len(self.num_voxels) != len(self.subjects):
            raise ValueError(f"synthetic.num_voxels has {len(self.num_voxels)} entries for "
                             f"{len(self.subjects)} subjects; expected one per subject")


# COCO-style and GIT-style captions of every image, by image id (JSON): what the demo's decoders
# learn from, for the train images only. Not part of the pscotti/mindeyev2 layout (NSD's
# captions are COCO's annotations), so only the synthetic dataset has it.
CAPTIONS_FILE = "synthetic/captions.json"


def files(cfg: SyntheticConfig) -> list[str]:
    """Every file ``write_dataset`` creates, relative to the data directory."""
    from fmri_recon.data.preprocess import INDICES_FILE, SHARED_FILE

    out = [nsd.IMAGES_FILE, *nsd.EVAL_FILES, nsd.MASKS_FILE, CAPTIONS_FILE, SHARED_FILE, INDICES_FILE]
    for s in cfg.subjects:
        out += [nsd.betas_file(s), nsd.test_tar(s, True), nsd.test_tar(s, False)]
        out += [nsd.train_tar(s, k) for k in range(cfg.num_sessions)]
    return out


# --------------------------------------------------------------------------- images
def _sources() -> list[np.ndarray]:
    import skimage.data
    from skimage.transform import rescale

    photos = []
    for name, _, _ in SOURCES:
        img = getattr(skimage.data, name)()
        img = img[0] if isinstance(img, tuple) else img            # stereo pairs
        img = np.asarray(img, dtype=np.float32) / 255.0
        img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
        if max(img.shape[:2]) > 512:                                 # crops never need more
            img = rescale(img, 512 / max(img.shape[:2]), channel_axis=2, anti_aliasing=True)
        photos.append(img)
    return photos


def make_images(n: int, size: int, rng: np.random.Generator):
    """``n`` natural photographs (n,size,size,3) uint8, as NSD's imgBrick holds its stimuli, with
    their source and crop scale."""
    from skimage.transform import resize

    photos = _sources()
    images = np.empty((n, size, size, 3), np.uint8)
    source, scale = rng.integers(len(photos), size=n), rng.uniform(0.35, 1.0, size=n)
    for i in range(n):
        img = photos[source[i]]
        side = int(scale[i] * min(img.shape[:2]))
        y, x = rng.integers(img.shape[0] - side + 1), rng.integers(img.shape[1] - side + 1)
        crop = img[y:y + side, x:x + side]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        crop = resize(crop, (size, size), anti_aliasing=True)
        gain = rng.uniform(0.8, 1.2) * rng.uniform(0.9, 1.1, size=3)  # brightness and colour cast
        images[i] = np.clip(crop * gain, 0, 1) * 255 + 0.5                 # rounded to uint8
    return images, source, scale


def captions(source: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-style and GIT-style captions that describe each image."""
    coco = [("a close up of " if s < 0.5 else "") + SOURCES[k][1] for k, s in zip(source, scale)]
    git = [SOURCES[k][2] for k in source]
    return np.array(coco), np.array(git)


def read_captions(data_dir: str | Path, image_ids: np.ndarray, style: str = "coco") -> list[str]:
    """The ``style`` ("coco" or "git") captions of ``image_ids`` from the dataset's CAPTIONS_FILE."""
    import json

    path = helpers.need(Path(data_dir) / CAPTIONS_FILE)
    every = json.loads(path.read_text())[style]
    if len(image_ids) and int(np.max(image_ids)) >= len(every):
        raise nsd.DataError(f"{path}: {len(every)} captions, image id {int(np.max(image_ids))} asked for")
    return [every[int(i)] for i in image_ids]


def image_features(images: np.ndarray) -> np.ndarray:
    """What the encoding model sees: an 8x8 colour thumbnail and a 4x4 grid of edge energies."""
    n, _, size, _ = images.shape
    thumb = images.reshape(n, 3, 8, size // 8, 8, size // 8).mean(axis=(3, 5)).reshape(n, -1)
    gray = images.mean(axis=1)
    edges = np.abs(np.diff(gray, axis=1))[:, :, :-1] + np.abs(np.diff(gray, axis=2))[:, :-1, :]
    cut = (size - 1) // 4 * 4
    grid = edges[:, :cut, :cut].reshape(n, 4, cut // 4, 4, cut // 4).mean(axis=(2, 4)).reshape(n, -1)
    feats = np.concatenate([thumb, grid], axis=1)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-6)


def semantic_features(source: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Which photograph an image was cut from (one-hot) and whether it is a close-up: what its
    captions say. Standardised like ``image_features``."""
    feats = np.concatenate([np.eye(len(SOURCES))[source], (scale < 0.5)[:, None]], axis=1).astype(np.float64)
    return (feats - feats.mean(0)) / (feats.std(0) + 1e-6)


# --------------------------------------------------------------------------- trials
def schedule(cfg: SyntheticConfig, test_ids: np.ndarray, train_ids: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Image id of every trial (sessions x trials, chronological) and its repeat number."""
    total = cfg.num_sessions * cfg.trials_per_session
    n_few = int(round(cfg.fewer_repeats * len(test_ids)))
    reps = np.full(len(test_ids), 3)
    few = rng.permutation(len(test_ids))[:n_few]
    reps[few[: n_few // 2]], reps[few[n_few // 2:]] = 1, 2          # half seen once, half twice
    test_trials = np.repeat(test_ids, reps)
    n_train = total - len(test_trials)
    if n_train <= 0 or n_train > 3 * len(train_ids):
        raise ValueError(f"synthetic: {total} trials cannot hold {len(test_trials)} test trials and up to 3 "
                         f"repeats of {len(train_ids)} train images; change trials_per_session or num_images")
    # Like NSD, an image's repeats fall far apart (mostly in different sessions): three
    # passes over the train images in order, with the test trials scattered among them.
    pool = np.concatenate([rng.permutation(train_ids) for _ in range(3)])[:n_train]
    is_test = np.zeros(total, bool)
    is_test[rng.choice(total, len(test_trials), replace=False)] = True
    trials = np.empty(total, np.int64)
    trials[is_test], trials[~is_test] = rng.permutation(test_trials), pool
    repeat = np.zeros(total, np.int64)
    for image in np.unique(trials):
        where = np.flatnonzero(trials == image)
        repeat[where] = np.arange(len(where))
    return trials, repeat


def behaviour(cfg: SyntheticConfig, subject: int, trials: np.ndarray, repeat: np.ndarray,
              shared: np.ndarray, rng) -> np.ndarray:
    """The 17 behaviour columns of every trial, in NSD's meaning (-1 where NSD has no value)."""
    total, tps = len(trials), cfg.trials_per_session
    b = -np.ones((total, nsd.BEHAV_COLUMNS))
    j = np.arange(total) % tps
    b[:, 0], b[:, 1], b[:, 2] = trials, subject, np.arange(total) // tps + 1
    b[:, 3], b[:, 4] = j * 12 // tps + 1, j % max(tps // 12, 1) + 1     # run (12 per session), trial in run
    b[:, 5] = np.arange(total)                                           # global trial = betas row
    b[:, 6] = (b[:, 2] - 1) * 7                                          # int(TIME): the day, one session a week
    b[:, 7] = b[:, 11] = (repeat > 0)                                    # ISOLD, ISOLDCURRENT
    b[:, 8] = b[:, 12] = rng.random(total) < 0.8                         # ISCORRECT(CURRENT)
    b[:, 9] = rng.uniform(500, 1500, total)                              # RT (ms)
    b[:, 10] = 0
    b[:, 15] = rng.integers(1, 3, total)                                 # BUTTON
    b[:, 16] = shared[trials]
    return b


def raw_betas(features: np.ndarray, trials: np.ndarray, n_vox: int, cfg: SyntheticConfig, rng) -> np.ndarray:
    """Betas of every trial as NSD stores them (percent signal change x 300, int16-valued): a fixed
    linear encoding of the image features plus trial noise, each voxel with its own baseline and
    gain, and a small drift from session to session. float32 (exact for int16 values)."""
    weights = rng.standard_normal((features.shape[1], n_vox)) / np.sqrt(features.shape[1])
    signal = features @ weights
    signal /= signal.std(0, keepdims=True) + 1e-6
    response = signal[trials] + cfg.noise * rng.standard_normal((len(trials), n_vox))
    baseline, gain = rng.uniform(-1, 1, n_vox), rng.uniform(0.5, 2.0, n_vox)
    drift = cfg.session_drift * rng.standard_normal((cfg.num_sessions, n_vox))
    session = np.arange(len(trials)) // cfg.trials_per_session
    percent = baseline + gain * (0.5 * response + drift[session])
    return np.clip(np.round(300 * percent), -32768, 32767).astype(np.float32)


@dataclass
class Generated:
    """One synthetic dataset before it is written, in either layout (this one or raw NSD's)."""

    cfg: SyntheticConfig
    photos: np.ndarray            # (n, R, R, 3) uint8: the stimuli at raw_image_size, as imgBrick
    images: np.ndarray            # (n, 3, S, S) float16 in [0, 1]: resized as preprocessing does
    source: np.ndarray
    scale: np.ndarray
    shared: np.ndarray            # (n,) bool: the test images
    behaviour: dict = field(default_factory=dict)   # subject -> (N, 17)
    betas: dict = field(default_factory=dict)       # subject -> (N, voxels) raw, int16-valued


def generate(cfg: SyntheticConfig, resize: tuple[str, bool]) -> Generated:
    """Every array of the dataset; ``resize`` = (method, antialias) of raw_image_size -> image_size."""
    from fmri_recon.data import preprocess

    rng = np.random.default_rng(cfg.seed)
    log.info("making %d images of %dx%d", cfg.num_images, cfg.raw_image_size, cfg.raw_image_size)
    photos, source, scale = make_images(cfg.num_images, cfg.raw_image_size, rng)
    images = preprocess.resize_images(photos, cfg.image_size, *resize)
    feats = image_features(images.astype(np.float32))
    if cfg.semantic:                      # what higher visual areas carry: what the picture shows
        feats = np.concatenate([feats, cfg.semantic * semantic_features(source, scale)], axis=1)
    test_ids = np.sort(rng.choice(cfg.num_images, cfg.num_test_images, replace=False))
    shared = np.zeros(cfg.num_images, bool)
    shared[test_ids] = True
    out = Generated(cfg, photos, images, source, scale, shared)
    for subject, n_vox in zip(cfg.subjects, cfg.num_voxels):
        trials, repeat = schedule(cfg, test_ids, np.flatnonzero(~shared), rng)
        out.behaviour[subject] = behaviour(cfg, subject, trials, repeat, shared, rng)
        out.betas[subject] = raw_betas(feats, trials, n_vox, cfg, rng)
    return out


def write_dataset(cfg: SyntheticConfig, data_dir: str | Path, resize: tuple[str, bool] = ("bilinear", True)) -> dict:
    """Write the whole layout under ``data_dir``; returns a short description of what was made.
    The betas are normalised as the released files are (fmri_recon.data.preprocess.normalise)."""
    import torch

    from fmri_recon.data import behaviour as behav
    from fmri_recon.data import preprocess

    data_dir = Path(data_dir)
    gen = generate(cfg, resize)
    test_ids = np.flatnonzero(gen.shared)
    _write_h5(data_dir / nsd.IMAGES_FILE, "images", gen.images, chunk_rows=1)
    coco, git = captions(gen.source[test_ids], gen.scale[test_ids])
    _save_pt(data_dir / nsd.EVAL_IMAGES, torch.from_numpy(gen.images[test_ids].astype(np.float32)))
    _save_pt(data_dir / nsd.EVAL_CAPTIONS, coco)
    _save_pt(data_dir / nsd.EVAL_GIT_CAPTIONS, git)
    all_coco, all_git = captions(gen.source, gen.scale)
    helpers.write_json(data_dir / CAPTIONS_FILE, {"coco": all_coco.tolist(), "git": all_git.tolist()})

    tps = cfg.trials_per_session
    for subject, b in gen.behaviour.items():
        log.info("subject %d: %d sessions x %d trials, %d voxels", subject, cfg.num_sessions, tps, gen.betas[subject].shape[1])
        train_rows = np.flatnonzero(b[:, nsd.COL_SHARED1000] == 0)
        betas = preprocess.normalise(gen.betas[subject].copy(), train_rows)
        _write_h5(data_dir / nsd.betas_file(subject), "betas", betas, chunk_rows=1)
        session = behav.sessions_of_rows(len(b), tps)
        behav.write_shards(data_dir, subject, behav.context_arrays(b, session), session)
    preprocess.write_index_files(data_dir, gen.shared, {s: b[:, 0].astype(np.int64) for s, b in gen.behaviour.items()})
    write_masks(data_dir / nsd.MASKS_FILE, cfg.subjects, cfg.num_voxels)
    return {"images": cfg.num_images, "test_images": int(len(test_ids)), "subjects": list(cfg.subjects)}


def _write_h5(path: Path, name: str, data: np.ndarray, chunk_rows: int) -> None:
    with helpers.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(name, data=data, chunks=(chunk_rows, *data.shape[1:]))


def _save_pt(path: Path, obj) -> None:
    import torch

    with helpers.atomic_output(path) as tmp:
        torch.save(obj, tmp)


def write_masks(path: str | Path, subjects: Sequence[int], num_voxels: int | Sequence[int],
                fractions: Sequence[float] = (0.15, 0.15, 0.12, 0.08)) -> Path:
    """A ``brain_region_masks.hdf5`` for the synthetic dataset, written atomically.

    ``nsd_general`` covers every voxel; V1-V4 are consecutive disjoint blocks of the given
    ``fractions`` of the voxels (at least 2 each) and ``higher_vis`` is the rest.
    ``num_voxels`` is one count for all subjects or one per subject.
    """
    counts = [int(num_voxels)] * len(subjects) if np.isscalar(num_voxels) else [int(n) for n in num_voxels]
    if len(counts) != len(subjects):
        raise ValueError(f"write_masks: {len(counts)} voxel counts for {len(subjects)} subjects")
    with helpers.atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        for subject, n in zip(subjects, counts):
            sizes = [max(2, int(round(fr * n))) for fr in fractions]
            if sum(sizes) + 2 > n:
                raise ValueError(f"write_masks: {n} voxels are too few for 5 regions")
            g = f.create_group(nsd.mask_group(subject))
            g.create_dataset(nsd.MASK_REGIONS[0], data=np.ones(n, dtype=bool))
            start = 0
            for region, size in zip(nsd.MASK_REGIONS[1:5], sizes):
                m = np.zeros(n, dtype=bool)
                m[start:start + size] = True
                g.create_dataset(region, data=m)
                start += size
            rest = np.zeros(n, dtype=bool)
            rest[start:] = True
            g.create_dataset(nsd.MASK_REGIONS[5], data=rest)
    return Path(path)
