"""The evaluate stage: MindEye2's metric protocol on one experiment's outputs -> table rows.

Stages scored (fmri_recon.evaluate.tables.STAGES): ``recon`` (unrefined), ``enhanced`` (refined; blended
with the blurry reconstruction only when that branch exists and ``blend_blurry`` > 0), and, for
``upper_bound_<clip>`` runs, ``upper_bound`` (the decoder fed ground-truth targets). Retrieval
and caption scores describe the brain model and are computed once per experiment.

Networks: pretrained weights from the weights stage for real runs (``nets: {name: file}``), or
random-initialised networks of the same classes (``nets: random``) for the demo and tests.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers
from fmri_recon.data import nsd
from fmri_recon.evaluate.metrics import brain as brain_metrics
from fmri_recon.evaluate.metrics import captions as caption_metrics
from fmri_recon.evaluate.metrics import feature_nets
from fmri_recon.evaluate.metrics import image as image_metrics
from fmri_recon.evaluate.metrics.retrieval import retrieval

log = logging.getLogger(__name__)
NETS = ("alexnet2", "alexnet5", "inception", "clip", "efficientnet", "swav")


def feature_models(nets, device="cpu", clip_arch: str = "ViT-L-14-quickgelu", seed: int = 0) -> dict:
    """The image-metric networks: {metric: model}; ``nets`` is "random" or {metric: weights file}."""
    from fmri_recon.targets.clip_targets import MODEL_CONFIGS
    import open_clip

    open_clip.add_model_config(MODEL_CONFIGS)     # tiny CLIP architectures for the demo
    models = {}
    for name in NETS:
        weights = None if nets == "random" else nets[name]
        models[name] = feature_nets.build_feature_model(name, weights, seed=seed, device=device, clip_arch=clip_arch)
    return models


def clip_text_model(arch: str, weights: str | None, device="cpu", seed: int = 0):
    """(open_clip model, tokenizer) for the CLIP text similarity of captions."""
    from fmri_recon.targets.clip_targets import MODEL_CONFIGS
    import open_clip

    open_clip.add_model_config(MODEL_CONFIGS)
    with torch.random.fork_rng(devices=[]):       # without weights (demo, tests): the same random model every run
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None)
    if weights:
        open_clip.load_checkpoint(model, weights, strict=True)
    return model.to(device).eval(), open_clip.get_tokenizer(arch)


def measured_voxels(data_dir, subject: int, num_sessions: int, new_test: bool) -> np.ndarray:
    """Test voxels averaged over their three repeats (1- and 2-repeat images as upstream), from the
    betas file as it is (all_sessions) whatever an experiment's ``normalisation``: brain correlation
    scores images, so its ground truth is the same for every run it compares."""
    return nsd.open_split(data_dir, subject, num_sessions, new_test).test_voxels().mean(1)


def missing_brain_inputs(ev: dict, inputs) -> str | None:
    """Why brain correlation cannot be computed (its region masks or GNet file absent), or None."""
    missing = [] if "masks" in inputs else [ev["masks"]]
    if ev["gnet"].startswith("data:") and "gnet" not in inputs:
        missing.append(ev["gnet"][len("data:"):])
    if not missing:
        return None
    return (f"brain correlation not computed: {' and '.join(missing)} not in data_dir (download: false), or "
            "the voxels are of another ROI than nsdgeneral, which GNet and the masks describe (preprocess.roi)")


def blend_blurry(enhanced: torch.Tensor, blurry: torch.Tensor, weight: float) -> torch.Tensor:
    """The refined images as upstream scores them: ``weight * enhanced + (1 - weight) * blurry``
    at 256x256 (weight 1: no blending)."""
    if weight >= 1:
        return enhanced
    return image_metrics.blend(image_metrics.resize_256(enhanced), image_metrics.resize_256(blurry), weight)


def metric_models(ev: dict, inputs, device) -> dict:
    """``feature_models`` of the evaluate block ``ev``: random nets, or each metric's weights file
    among a rule's ``inputs`` (``net_<torchvision net>``, ``clip_weights``)."""
    if ev["nets"] == "random":
        if "clip_weights" in inputs.keys():
            raise ValueError("evaluate: nets = random but clip_weights is a file; use random for both")
        nets = "random"
    else:
        nets = {"alexnet2": inputs.net_alexnet, "alexnet5": inputs.net_alexnet, "inception": inputs.net_inception,
                "efficientnet": inputs.net_efficientnet, "swav": inputs.net_swav, "clip": inputs.clip_weights}
    return feature_models(nets, device, clip_arch=ev["clip_arch"])


def grid_columns(gt: torch.Tensor, images: dict[str, torch.Tensor], refined: torch.Tensor | None = None) -> list:
    """The evaluate grid's (title, images) columns: the ground truth, then each stage as its row
    scores it; a blurry experiment's enhanced row scores the blend, drawn beside the refined images."""
    columns = [("ground truth", gt)]
    titles = {"upper_bound": "upper bound", "recon": "recon", "blurry": "blurry"}
    columns += [(titles[stage], images[stage]) for stage in titles if stage in images]
    if "enhanced" in images:
        blended = "blurry" in images and refined is not None
        columns += [("refined", refined), ("blend (scored)", images["enhanced"])] if blended else [("refined", images["enhanced"])]
    return columns


def ground_truth_features(gt: torch.Tensor, models: dict, device="cpu", batch_size: int = 32) -> dict:
    """{metric: features} of the ground-truth images for every network metric: the same for every
    evaluate job of a run, so the gt_features rule computes them once (about 16 s on 2 cores with
    the demo's random nets, most of it Inception at 342 px)."""
    gt = image_metrics.resize_256(gt)
    return {k: feature_nets.extract(k, models[k], gt, batch_size, device=device)
            for k in image_metrics.METRIC_KEYS[2:] if k in models}


def read_ground_truth_features(path, n_images: int) -> dict:
    """The gt_features rule's file, checked against the number of ground-truth images scored."""
    from safetensors.torch import load_file

    features = load_file(str(helpers.need(path)))
    wrong = {k: len(v) for k, v in features.items() if len(v) != n_images}
    if wrong:
        raise ValueError(f"{path}: features of {wrong} images, the ground truth has {n_images}")
    return features


def score_images(images: dict[str, torch.Tensor], gt: torch.Tensor, models: dict, gnet=None, subject: int = 1,
                 measured=None, masks=None, device="cpu", batch_size: int = 32,
                 gt_features: dict | None = None) -> tuple[dict, dict]:
    """Image metrics and brain correlation of each stage's images against the ground truth.
    ``gt_features``: the ground truth's (``ground_truth_features``); computed here when absent."""
    image, brain = {}, {}
    gt_features = dict(gt_features or {})       # ground-truth features: computed once for all stages
    for stage, rec in images.items():
        log.info("scoring %s (%d images)", stage, len(rec))
        image[stage] = feature_nets.image_metrics(gt, rec, models, device=device, gt_features=gt_features,
                                                   batch_size=batch_size)
        if gnet is not None:
            pred = brain_metrics.predict_voxels(gnet, image_metrics.resize_256(rec), subject, device=device,
                                                batch_size=batch_size)
            brain[stage] = brain_metrics.brain_correlation(pred, torch.from_numpy(measured), masks)
    return image, brain


def score_captions(predcaptions, coco, git_captions, *, sentence_model, clip_text) -> dict:
    """Caption scores of the predicted captions against COCO's, and relative to GIT's own captions."""
    pred = [str(c) for c in predcaptions]
    vs_coco = caption_metrics.caption_metrics(pred, [str(c) for c in coco], sentence_model=sentence_model,
                                              clip_text=clip_text)
    vs_git = caption_metrics.caption_metrics(pred, [str(c) for c in git_captions], sentence_model=sentence_model,
                                             clip_text=clip_text)
    git_vs_coco = caption_metrics.caption_metrics([str(c) for c in git_captions], [str(c) for c in coco],
                                                  sentence_model=sentence_model, clip_text=clip_text)
    return {"captions": vs_coco, "captions_vs_git": vs_git,
            "captions_relative": caption_metrics.relative(vs_git, git_vs_coco)}


def score_brain_model(clipvoxels, targets, predcaptions, coco, git_captions, *, sentence_model, clip_text,
                      draws: int, draw_size: int, seed: int = 42) -> dict:
    """Retrieval (both directions, named) and caption scores: properties of the brain model."""
    ret = retrieval(torch.as_tensor(targets).float(), torch.as_tensor(clipvoxels).float(), n_draws=draws,
                    draw_size=draw_size, seed=seed)
    return {"retrieval": ret, **score_captions(predcaptions, coco, git_captions, sentence_model=sentence_model,
                                               clip_text=clip_text)}


def load_pt(path: str | Path):
    """An evals file (tensors, or captions saved as a numpy array of str)."""
    return nsd.load_eval(Path(path).parent, Path(path).name)
