"""MindEye2's evaluation metrics (docs/upstream.md §5).

* :mod:`fmri_recon.evaluate.metrics.image`: low- and high-level image metrics (PixCorr, SSIM,
  two-way identification with AlexNet(2)/(5), InceptionV3 and CLIP ViT-L/14, and the
  correlation distances of EfficientNet-B1 and SwAV), plus the explicit 0.75/0.25 blend.
* :mod:`fmri_recon.evaluate.metrics.retrieval`: 300-way top-1 retrieval in both directions.

The function ``retrieval.retrieval`` is deliberately not re-exported here, so that
``fmri_recon.evaluate.metrics.retrieval`` stays the module (use
``from fmri_recon.evaluate.metrics.retrieval import retrieval``).
"""

from fmri_recon.evaluate.metrics import image, retrieval
from fmri_recon.evaluate.metrics.image import (
    FEATURE_NETS,
    METRIC_KEYS,
    FeatureNet,
    blend,
    build_feature_model,
    correlation_distance,
    extract,
    image_metrics,
    pixcorr,
    resize_256,
    ssim,
    two_way_identification,
)
from fmri_recon.evaluate.metrics.retrieval import PAPER_NAMES, UPSTREAM_NAMES, topk_matches

__all__ = [
    "FEATURE_NETS",
    "METRIC_KEYS",
    "FeatureNet",
    "PAPER_NAMES",
    "UPSTREAM_NAMES",
    "blend",
    "build_feature_model",
    "correlation_distance",
    "extract",
    "image",
    "image_metrics",
    "pixcorr",
    "resize_256",
    "retrieval",
    "ssim",
    "topk_matches",
    "two_way_identification",
]
