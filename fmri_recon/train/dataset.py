"""What training holds in memory: the voxels of the chosen sessions and their cached CLIP targets
(and, for the blurry branch, the cached low-level targets and the train images).

Voxels of every train trial and of the test set are read once (sorted unique rows, never the
whole betas file); targets come from the ``targets`` stage's cache, so training never runs
CLIP. Test voxels keep their three repeats apart: upstream runs the model on each repeat
and averages the outputs, not the voxels (docs/upstream.md §1.4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fmri_recon.data import nsd
from fmri_recon.targets.clip_targets import TargetCache


@dataclass
class SubjectData:
    subject: int
    voxels: torch.Tensor          # (N, V) float16: train trials
    target_index: torch.Tensor    # (N,) long: row of each trial's image in ``targets``
    image_ids: np.ndarray         # (N,) the 73k id of each train trial
    test_voxels: torch.Tensor     # (n, 3, V) float16: the three repeats of each test image
    test_index: torch.Tensor      # (n,) long: row of each test image in ``targets``
    test_images: np.ndarray       # (n,) sorted 73k ids

    @property
    def num_voxels(self) -> int:
        return self.voxels.shape[1]


class ImagesOnDisk:
    """Train images read from the images file when a step needs them (sorted unique rows, one
    read per call): nothing held. 7 subjects' train images would be about 22 GB in fp16."""

    def __init__(self, data_dir):
        self.data_dir = data_dir

    def __call__(self, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(nsd.read_images(self.data_dir, ids).astype(np.float16, copy=False))


class ImagesInMemory:
    """Images held in memory (tests, benchmarks; and the path training took before ImagesOnDisk)."""

    def __init__(self, image_ids: np.ndarray, images: torch.Tensor):
        self.image_ids, self.images = np.asarray(image_ids), images      # sorted ids, their images

    def __call__(self, ids: np.ndarray) -> torch.Tensor:
        return self.images[np.searchsorted(self.image_ids, ids)]


@dataclass
class LowLevelData:
    """The blurry branch's targets (rows as ``TrainData.targets``) and the train images, which
    the teacher sees augmented at every step."""
    latents: torch.Tensor         # (U, 4, 28, 28) float16: VAE latents (x 0.18215)
    teacher: torch.Tensor         # (U, 49, 512) float16: teacher features of the unaugmented images
    images: ImagesOnDisk | ImagesInMemory   # 73k ids -> (n, 3, 224, 224) float16 in [0, 1]

    def images_of(self, ids: np.ndarray) -> torch.Tensor:
        return self.images(ids)


@dataclass
class TrainData:
    subjects: list[SubjectData]
    targets: torch.Tensor         # (U, S, E) float16: every image any subject uses, once
    image_ids: np.ndarray         # (U,) sorted ids of the rows of ``targets``
    lowlevel: LowLevelData | None = None
    # Upstream's epoch: 750 x sessions samples (750 x 40 for multi-subject), i.e. trials per session
    # x the most sessions of any subject; None: one pass over each subject's train trials.
    samples_per_epoch: int | None = None


def load_lowlevel(data_dir, cache_path, ids: np.ndarray) -> LowLevelData:
    """The low-level targets of ``ids`` from the ``lowlevel_targets`` cache; the images stay on disk."""
    cache = TargetCache(cache_path)
    return LowLevelData(latents=torch.from_numpy(cache.get(ids, "latents")),
                        teacher=torch.from_numpy(cache.get(ids, "teacher")), images=ImagesOnDisk(data_dir))


def load(data_dir, subjects: list[int], num_sessions: int, new_test: bool, targets_path,
         lowlevel_path=None, *, normalisation: str) -> TrainData:
    """Read the voxels of ``subjects`` (first ``num_sessions`` sessions; each subject's normalised as
    ``normalisation`` says, fmri_recon.data.normalise) and their targets (with ``lowlevel_path``,
    the blurry branch's too)."""
    splits = [nsd.open_split(data_dir, s, num_sessions, new_test, normalisation) for s in subjects]
    ids = np.unique(np.concatenate([sp.all_images() for sp in splits]))
    cache = TargetCache(targets_path)
    targets = torch.from_numpy(cache.get(ids))
    out = []
    for sp in splits:
        train = sp.voxels(sp.train_trials)
        out.append(SubjectData(
            subject=sp.subject,
            voxels=torch.from_numpy(train).half(),
            target_index=torch.from_numpy(np.searchsorted(ids, sp.train_images)),
            image_ids=sp.train_images,
            test_voxels=torch.from_numpy(sp.test_voxels()).half(),
            test_index=torch.from_numpy(np.searchsorted(ids, sp.test_images)),
            test_images=sp.test_images,
        ))
    lowlevel = None
    if lowlevel_path is not None:
        lowlevel = load_lowlevel(data_dir, lowlevel_path, ids)
    samples = splits[0].trials_per_session * num_sessions
    return TrainData(out, targets, ids, lowlevel, samples_per_epoch=samples)
