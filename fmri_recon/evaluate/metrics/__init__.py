"""MindEye2's evaluation metrics (docs/upstream.md §5).

* :mod:`fmri_recon.evaluate.metrics.image`: PixCorr, SSIM, two-way identification and
  correlation distance of features, the bootstrap interval, plus the explicit 0.75/0.25 blend.
* :mod:`fmri_recon.evaluate.metrics.feature_nets`: the networks behind the high-level metrics
  (AlexNet(2)/(5), InceptionV3, CLIP ViT-L/14, EfficientNet-B1, SwAV) and ``image_metrics``.
* :mod:`fmri_recon.evaluate.metrics.retrieval`: 300-way top-1 retrieval in both directions.

The function ``retrieval.retrieval`` is deliberately not re-exported here, so that
``fmri_recon.evaluate.metrics.retrieval`` stays the module (use
``from fmri_recon.evaluate.metrics.retrieval import retrieval``).
"""

from fmri_recon.evaluate.metrics import feature_nets, image, retrieval
from fmri_recon.evaluate.metrics.feature_nets import FEATURE_NETS, FeatureNet, build_feature_model, extract, image_metrics
from fmri_recon.evaluate.metrics.image import (
    METRIC_KEYS,
    blend,
    correlation_distance,
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
    "feature_nets",
    "image",
    "image_metrics",
    "pixcorr",
    "resize_256",
    "retrieval",
    "ssim",
    "topk_matches",
    "two_way_identification",
]
