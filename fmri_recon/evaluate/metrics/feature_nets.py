"""The network-based image metrics (docs/upstream.md §5.3-5.5): AlexNet layers 2 and 5,
Inception, CLIP, EfficientNet and SwAV features, extracted as upstream's final evaluation does,
and :func:`image_metrics`, which scores a set of reconstructions on every metric.

Networks are never downloaded here: :func:`build_feature_model` builds the torchvision
architecture with ``weights=None`` and either loads a local state dict strictly or keeps a
seeded random initialisation. CLIP is any ``encode_image(x) -> (N, D)`` callable. The pixel
metrics and the scores computed from features are in fmri_recon.evaluate.metrics.image.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fmri_recon.evaluate.metrics.image import (
    METRIC_KEYS, _as_images, _check_pair, _resize, bootstrap_ci95, correlation_distance, pixcorr, resize_256, ssim,
    two_way_identification,
)
from fmri_recon.resize import CLIP_MEAN, CLIP_STD

__all__ = ["CLIP_ARCH", "FEATURE_NETS", "IMAGENET_MEAN", "IMAGENET_STD", "FeatureNet", "build_feature_model",
           "extract", "image_metrics"]


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


# OpenAI's ViT-L/14 uses QuickGELU; this open_clip config is the same network.
CLIP_ARCH = "ViT-L-14-quickgelu"


@dataclass(frozen=True)
class FeatureNet:
    """How one network-based metric gets its features (spec 5.3-5.5).

    ``constructor`` is the name of a ``torchvision.models`` builder, or ``"encode_image"``
    for CLIP (any callable ``encode_image(x) -> (N, D)``, e.g. an open_clip model's).
    ``return_node`` is the ``create_feature_extractor`` node (``None`` for CLIP, whose
    output is the final image embedding).  ``resize`` is the short-side ``Resize`` applied
    to the 256x256 image before normalisation with ``mean``/``std``.  ``score`` is
    ``"two_way"`` (two-way identification, higher is better) or ``"distance"`` (mean
    correlation distance, lower is better).
    """

    name: str
    label: str
    constructor: str
    return_node: str | None
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    score: str
    builder_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return self.score == "two_way"


FEATURE_NETS: dict[str, FeatureNet] = {
    net.name: net
    for net in (
        # AlexNet IMAGENET1K_V1; features.4 = ReLU after conv2, features.11 = ReLU after conv5.
        FeatureNet("alexnet2", "Alex(2)", "alexnet", "features.4", 256, IMAGENET_MEAN, IMAGENET_STD, "two_way"),
        FeatureNet("alexnet5", "Alex(5)", "alexnet", "features.11", 256, IMAGENET_MEAN, IMAGENET_STD, "two_way"),
        # Inception_V3_Weights.DEFAULT makes torchvision build the net with aux_logits=True and
        # transform_input=True (re-normalises ImageNet-normalised input to [-1, 1]); copy that.
        FeatureNet("inception", "Incep", "inception_v3", "avgpool", 342, IMAGENET_MEAN, IMAGENET_STD, "two_way",
                   {"aux_logits": True, "transform_input": True}),
        # OpenAI CLIP ViT-L/14, final 768-d image embedding (not normalised).
        FeatureNet("clip", "CLIP", "encode_image", None, 224, CLIP_MEAN, CLIP_STD, "two_way"),
        FeatureNet("efficientnet", "Eff", "efficientnet_b1", "avgpool", 255, IMAGENET_MEAN, IMAGENET_STD, "distance"),
        # torch.hub facebookresearch/swav resnet50 = torchvision resnet50 with the SwAV trunk.
        FeatureNet("swav", "SwAV", "resnet50", "avgpool", 224, IMAGENET_MEAN, IMAGENET_STD, "distance"),
    )
}


def _load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return dict(obj)


def _adapt_swav(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Make SwAV's released checkpoint fit a torchvision resnet50, like its hubconf does.

    The hub strips ``module.`` and loads non-strictly: the checkpoint has no ``fc`` (which
    stays randomly initialised, and is after ``avgpool`` anyway) and has SwAV's
    ``projection_head`` / ``prototypes`` (ignored).  Only those differences are tolerated.
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(("projection_head.", "prototypes."))}
    own = model.state_dict()
    for k in ("fc.weight", "fc.bias"):
        if k not in sd:
            sd[k] = own[k]
    return sd


def build_feature_model(name: str, weights_path: str | Path | None = None, *, seed: int = 0,
                        device: str | torch.device = "cpu", clip_arch: str = CLIP_ARCH):
    """The feature network of metric ``name`` (a key of :data:`FEATURE_NETS`), in eval mode.

    torchvision nets are built with ``weights=None``; with ``weights_path`` a local
    torchvision state dict (``.pth``/``.pt`` or ``.safetensors``) is loaded *strictly*
    (SwAV: see :func:`_adapt_swav`), without it the random initialisation is seeded with
    ``seed`` (the global RNG is left untouched).  Returns a
    ``create_feature_extractor`` module whose output is ``{return_node: tensor}``.

    ``"clip"`` builds an open_clip ``clip_arch`` model (OpenAI ViT-L/14 = ``ViT-L-14-quickgelu``),
    loads ``weights_path`` (an open_clip-format state dict) strictly, and returns its
    ``encode_image`` bound method.  Any other ``encode_image`` callable may be passed to
    :func:`extract` / :func:`image_metrics` instead.
    """
    if name not in FEATURE_NETS:
        raise ValueError(f"unknown feature net {name!r}; expected one of {sorted(FEATURE_NETS)}")
    spec = FEATURE_NETS[name]

    if spec.constructor == "encode_image":
        import open_clip

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.create_model(clip_arch, pretrained=None)
        if weights_path is not None:
            open_clip.load_checkpoint(model, str(weights_path), strict=True)
        model = model.to(device).eval().requires_grad_(False)
        return model.encode_image

    import torchvision.models
    from torchvision.models.feature_extraction import create_feature_extractor

    builder = getattr(torchvision.models, spec.constructor)
    kwargs = dict(spec.builder_kwargs)
    if spec.constructor == "inception_v3":
        kwargs["init_weights"] = False   # PyTorch's default init; torchvision's truncnorm init is slow
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = builder(weights=None, **kwargs)
    if weights_path is not None:
        state_dict = _load_state_dict(weights_path)
        if name == "swav":
            state_dict = _adapt_swav(state_dict, model)
        model.load_state_dict(state_dict, strict=True)
    model.eval()
    with warnings.catch_warnings():
        # inception_v3: the eval-mode graph lacks the aux branch; irrelevant for our node
        warnings.filterwarnings("ignore", message="NOTE: The nodes obtained by tracing")
        extractor = create_feature_extractor(model, return_nodes=[spec.return_node])
    return extractor.to(device).eval().requires_grad_(False)


def _device_dtype(model: Any) -> tuple[torch.device | None, torch.dtype | None]:
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "__self__", None)
    if isinstance(module, torch.nn.Module):
        for p in module.parameters():
            return p.device, (p.dtype if p.is_floating_point() else None)
    return None, None


def extract(net_name: str, model: Callable[[torch.Tensor], Any], images: torch.Tensor,
            batch_size: int = 32, *, device: str | torch.device | None = None) -> torch.Tensor:
    """Flattened float32 CPU features ``(N, D)`` of ``images`` (256x256, ``[0, 1]``).

    Applies the metric's preprocessing (bilinear short-side ``Resize(spec.resize)``, no
    antialiasing, then normalisation) and runs ``model`` in batches without gradients.
    ``model`` is what :func:`build_feature_model` returns, or any callable returning a
    tensor or a dict holding ``spec.return_node``.  Inputs go to ``device`` (default: the
    device of the model's parameters, else as given) in the parameters' float dtype.
    """
    from torchvision.transforms import functional as TF

    if net_name not in FEATURE_NETS:
        raise ValueError(f"unknown feature net {net_name!r}; expected one of {sorted(FEATURE_NETS)}")
    spec = FEATURE_NETS[net_name]
    images = _as_images(images, "images")
    model_device, model_dtype = _device_dtype(model)
    device = torch.device(device) if device is not None else model_device
    feats = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = images[s:s + batch_size]
            if device is not None:
                x = x.to(device)
            x = TF.normalize(_resize(x, spec.resize), spec.mean, spec.std)
            if model_dtype is not None:
                x = x.to(model_dtype)
            out = model(x)
            if isinstance(out, Mapping):
                if spec.return_node in out:
                    out = out[spec.return_node]
                elif len(out) == 1:
                    out = next(iter(out.values()))
                else:
                    raise KeyError(f"{net_name}: model output has no node {spec.return_node!r}: {list(out)}")
            feats.append(out.float().flatten(1).cpu())
    return torch.cat(feats, dim=0)


def image_metrics(gt: torch.Tensor, rec: torch.Tensor, models: Mapping[str, Any] | None = None,
                  *, batch_size: int = 32, device: str | torch.device | None = None,
                  gt_features: dict | None = None) -> dict[str, float]:
    """All of section 5's image metrics for which a model is given.

    ``gt`` and ``rec`` are ``(N,3,H,W)`` in ``[0,1]``; both are brought to 256x256 with
    :func:`resize_256` first (a no-op when already 256x256).  Any blending must be done by
    the caller (:func:`blend`).  ``pixcorr`` and ``ssim`` are always computed; each of
    ``alexnet2, alexnet5, inception, clip, efficientnet, swav`` is computed when ``models``
    holds it (a feature extractor, or for ``clip`` an ``encode_image`` callable).
    Two-way identification scores are fractions in [0, 1] (higher is better); ``efficientnet``
    and ``swav`` are mean correlation distances (lower is better).  Keys follow
    :data:`METRIC_KEYS` order, then each one's ``<key>_ci95`` (``bootstrap_ci95`` over the
    test images).  ``gt_features``: a dict kept by the caller across calls with
    the same ``gt`` (several image sets of one experiment); the ground truth's features are
    computed once and stored in it by metric name.
    """
    models = dict(models or {})
    gt_features = {} if gt_features is None else gt_features
    unknown = set(models) - set(FEATURE_NETS)
    if unknown:
        raise ValueError(f"unknown metric model(s) {sorted(unknown)}; expected some of {sorted(FEATURE_NETS)}")
    gt, rec = _check_pair(gt, rec)
    gt, rec = resize_256(gt), resize_256(rec)
    each = {"pixcorr": pixcorr(gt, rec, per_image=True), "ssim": ssim(gt, rec, per_image=True)}
    for key in METRIC_KEYS[2:]:
        model = models.get(key)
        if model is None:
            continue
        spec = FEATURE_NETS[key]
        if key not in gt_features:
            gt_features[key] = extract(key, model, gt, batch_size, device=device)
        g = gt_features[key]
        r = extract(key, model, rec, batch_size, device=device)
        each[key] = (two_way_identification(g, r, return_per_image=True) if spec.score == "two_way"
                     else correlation_distance(g, r, per_image=True))
    out: dict[str, float] = {k: float(np.mean(v)) for k, v in each.items()}
    out.update({f"{k}_ci95": bootstrap_ci95(v) for k, v in each.items()})
    return out
