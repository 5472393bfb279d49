"""Image metrics of MindEye2's final evaluation (docs/upstream.md §5.0-5.5).

Every function takes torch tensors of images ``(N, 3, H, W)``, float in ``[0, 1]``
(ground truth first, reconstruction second), or feature matrices ``(N, ...)``.

Conventions copied from upstream (``final_evaluations.ipynb``, torchvision 0.16):

* All images are first brought to 256x256 with :func:`resize_256` (bilinear, no
  antialiasing: the tensor default in torchvision 0.16).  Blending enhanced and blurry
  reconstructions (:func:`blend`) is explicit and happens after that resize.
* Every metric-specific ``Resize(size)`` is also bilinear *without* antialiasing
  (torchvision >= 0.17 defaults to ``antialias=True``, so it is passed explicitly here).
  It resizes the short side; inputs are square, so there is no crop.
* Features are flattened and cast to float before any statistic.

The networks whose features the two-way and distance scores compare, and :func:`image_metrics`
which runs every metric, are in fmri_recon.evaluate.metrics.feature_nets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fmri_recon.resize import CLIP_MEAN, CLIP_STD, OUTPUT_SIZE

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "METRIC_KEYS",
    "blend",
    "correlation_distance",
    "pixcorr",
    "resize_256",
    "ssim",
    "two_way_identification",
]


EVAL_SIZE = OUTPUT_SIZE      # 5.0: everything is compared at 256x256
LOWLEVEL_SIZE = 425  # 5.1 / 5.2: PixCorr and SSIM are computed at 425x425

# Output keys of image_metrics, in the column order of the paper's tables.
METRIC_KEYS = ("pixcorr", "ssim", "alexnet2", "alexnet5", "inception", "clip", "efficientnet", "swav")


# --------------------------------------------------------------------------- resizing

def _resize(x: torch.Tensor, size: int | list[int]) -> torch.Tensor:
    """torchvision tensor ``Resize(size)``: bilinear, antialias off (tv 0.16 tensor default)."""
    from fmri_recon.resize import resize

    return resize(x, size)


def _as_images(x: torch.Tensor, what: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected images (N, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected float images in [0, 1], got dtype {x.dtype}")
    return x.float()


def _check_pair(gt: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gt, rec = _as_images(gt, "gt"), _as_images(rec, "rec")
    if gt.shape[0] != rec.shape[0]:
        raise ValueError(f"gt and rec differ in number of images: {gt.shape[0]} vs {rec.shape[0]}")
    return gt, rec


def resize_256(x: torch.Tensor) -> torch.Tensor:
    """Images ``(N,3,H,W)`` -> ``(N,3,256,256)`` float (5.0: bilinear, no antialiasing)."""
    return _resize(_as_images(x, "images"), [EVAL_SIZE, EVAL_SIZE])


def blend(enhanced: torch.Tensor, blurry: torch.Tensor, weight: float = 0.75) -> torch.Tensor:
    """``weight * enhanced + (1 - weight) * blurry`` (upstream: 0.75 / 0.25).

    Upstream's final evaluation applies this at 256x256, after :func:`resize_256`, and only
    when the reconstructions file is the *enhanced* one.  The code's ratio is 3:1 although
    the paper's text says 4:1; 0.75 reproduces the published numbers.  Never applied
    implicitly by :func:`image_metrics`.
    """
    enhanced, blurry = torch.as_tensor(enhanced), torch.as_tensor(blurry)
    if enhanced.shape != blurry.shape:
        raise ValueError(f"blend: shapes differ: {tuple(enhanced.shape)} vs {tuple(blurry.shape)}")
    return weight * enhanced + (1.0 - weight) * blurry


# --------------------------------------------------------------------------- low-level

def _mean_or_each(scores, per_image: bool):
    scores = np.asarray(scores, dtype=np.float64)
    return scores if per_image else float(np.mean(scores))


def pixcorr(gt: torch.Tensor, rec: torch.Tensor, *, per_image: bool = False):
    """5.1: mean over images of the Pearson r of the flattened RGB pixels at 425x425
    (``per_image``: the array of each image's r)."""
    gt, rec = _check_pair(gt, rec)
    g = _resize(gt, LOWLEVEL_SIZE).reshape(len(gt), -1).cpu().numpy()
    r = _resize(rec, LOWLEVEL_SIZE).reshape(len(rec), -1).cpu().numpy()
    return _mean_or_each((_standardised_rows(g) * _standardised_rows(r)).sum(axis=1), per_image)


def ssim(gt: torch.Tensor, rec: torch.Tensor, *, per_image: bool = False):
    """5.2: mean SSIM of the grayscale 425x425 images (Gaussian window, sigma 1.5;
    ``per_image``: the array of each image's SSIM).

    Grayscale is ``skimage.color.rgb2gray`` (0.2125 R + 0.7154 G + 0.0721 B); the call is
    ``structural_similarity(rec, gt, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)`` (upstream also passes
    ``multichannel=True``, which has no effect on 2-D inputs and no longer exists).
    """
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    gt, rec = _check_pair(gt, rec)
    g = _resize(gt, LOWLEVEL_SIZE).permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    r = _resize(rec, LOWLEVEL_SIZE).permute(0, 2, 3, 1).cpu().numpy().astype(np.float64)
    scores = [
        structural_similarity(rgb2gray(r[i]), rgb2gray(g[i]), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0)
        for i in range(len(g))
    ]
    return _mean_or_each(scores, per_image)


# --------------------------------------------------------------------------- feature scores

def _as_features(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{what}: expected features (N, ...), got shape {x.shape}")
    return x.reshape(len(x), -1)


def _standardised_rows(x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Rows centred and scaled to unit norm, in float64 (so ``z_a @ z_b.T`` is Pearson r)."""
    out = np.empty(x.shape, dtype=np.float64)
    for s in range(0, len(x), chunk):
        block = x[s:s + chunk].astype(np.float64)
        block -= block.mean(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[s:s + chunk] = block
    return out


def two_way_identification(gt_feats: Any, rec_feats: Any, *, return_per_image: bool = False):
    """5.3: two-way identification of reconstructions among ground truths.

    With ``R`` = ground-truth features and ``P`` = reconstruction features (flattened),
    ``r = corrcoef(R, P)[:N, N:]`` so ``r[i, j] = corr(real_i, pred_j)``.  For each
    reconstruction ``j``: ``count_j = #{i : r[i, j] < r[j, j]}`` (the diagonal never
    counts); the score is ``mean_j(count_j) / (N - 1)``.  The reconstruction is held fixed
    and the ground truth varies.

    ``r`` is computed as products of standardised float64 rows (identical to
    ``np.corrcoef`` up to rounding, without its ``2N x 2N`` intermediate).  With
    ``return_per_image=True`` the per-reconstruction fractions ``count_j / (N - 1)`` are
    returned as an array instead of their mean.
    """
    R, P = _as_features(gt_feats, "gt_feats"), _as_features(rec_feats, "rec_feats")
    if R.shape != P.shape:
        raise ValueError(f"gt_feats and rec_feats differ in shape: {R.shape} vs {P.shape}")
    n = len(R)
    if n < 2:
        raise ValueError("two-way identification needs at least 2 images")
    r = _standardised_rows(R) @ _standardised_rows(P).T       # r[i, j] = corr(real_i, pred_j)
    congruent = np.diag(r)                                     # r[j, j]
    counts = np.sum(r < congruent[None, :], axis=0)            # over i, per column j
    per_image = counts / (n - 1)
    return per_image if return_per_image else float(np.mean(counts) / (n - 1))


def correlation_distance(gt_feats: Any, rec_feats: Any, *, per_image: bool = False):
    """5.4 / 5.5: mean over images of ``scipy.spatial.distance.correlation(gt_i, rec_i)``
    (``per_image``: the array of each image's distance)."""
    from scipy.spatial.distance import correlation

    G, P = _as_features(gt_feats, "gt_feats"), _as_features(rec_feats, "rec_feats")
    if G.shape != P.shape:
        raise ValueError(f"gt_feats and rec_feats differ in shape: {G.shape} vs {P.shape}")
    G, P = G.astype(np.float64), P.astype(np.float64)
    return _mean_or_each([correlation(G[i], P[i]) for i in range(len(G))], per_image)


def bootstrap_ci95(per_image: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95% percentile bootstrap interval of the mean over test images
    (scipy.stats.bootstrap; resampling images with replacement, a fixed seed so reruns agree).
    NaN when a score is NaN or there are fewer than 2 images."""
    from scipy.stats import bootstrap

    x = np.asarray(per_image, dtype=np.float64)
    if len(x) < 2 or not np.isfinite(x).all():
        return float("nan")
    if np.ptp(x) == 0:
        return 0.0                                            # every resample has the same mean
    res = bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.high - res.confidence_interval.low) / 2


# --------------------------------------------------------------------------- networks


