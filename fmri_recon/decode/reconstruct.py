"""The reconstruct stage: test voxels -> brain model -> prior -> decoder images and captions.

Per test image (sorted 73k id, the order of ``evals/all_images.pt``) the model runs on each
of its three repeats and the outputs are averaged (docs/upstream.md §1.4, §3.2); the prior then samples
CLIP tokens from the averaged backbone (DDIM, 20 steps). Tokens of another space than the
decoder's go through a converter trained on images (fmri_recon.decode.converter), never padding.

Files (``evals/{name}/{name}_*.pt``), n = number of test images:

    all_backbones.pt     (n, S, E) float16   backbone tokens, averaged over repeats
    all_clipvoxels.pt    (n, S, E) float16   retrieval-head tokens, averaged over repeats
    all_prior_out.pt     (n, S, E) float16   prior samples (what the decoder is conditioned on)
    all_recons.pt        (n, 3, 256, 256) float32 in [0, 1]
    all_predcaptions.pt  numpy array of n str (GIT captions of the predicted features)
    all_blurryrecons.pt  (n, 3, 256, 256) float32 in [0, 1], only with the blurry branch

Work is done in chunks of test images; finished chunks are kept in a hidden progress folder
(keyed by the stage's settings) so an interrupted run does not recompute them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers

log = logging.getLogger(__name__)
FILES = ("backbones", "clipvoxels", "prior_out", "recons", "predcaptions")


def output_paths(out_dir: str | Path, name: str, blurry: bool = False) -> dict[str, Path]:
    names = FILES + (("blurryrecons",) if blurry else ())
    return {k: Path(out_dir) / f"{name}_all_{k}.pt" for k in names}


@torch.no_grad()
def brain_model(inputs, model_settings: str, num_voxels: int):
    """An experiment's brain model: its released checkpoint (input ``released``) built with the
    experiment's architecture (``model_settings``, experiment.model_params), or the ``last.pth`` its
    training wrote beside the ``train`` stats (rebuilt from the config saved in it)."""
    import json

    from fmri_recon import experiment
    from fmri_recon.train import checkpoint

    if "released" in inputs.keys():
        cfg = experiment.brain_config(json.loads(model_settings), [num_voxels])
        return checkpoint.load_released(inputs.released, cfg)
    return checkpoint.load_model(Path(inputs.train).parent / "last.pth")[0]


def brain_embeddings(model, test_voxels: torch.Tensor, *, prior_steps: int, seed: int,
                     batch_size: int = 16, device="cpu", subj_idx: int = 0) -> dict[str, torch.Tensor]:
    """backbones, clipvoxels, prior_out (n,S,E) from test voxels (n,3,V): per-repeat outputs averaged."""
    model = model.to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    out = {"backbones": [], "clipvoxels": [], "prior_out": []}
    for start in range(0, len(test_voxels), batch_size):
        chunk = test_voxels[start:start + batch_size].float().to(device)
        reps = model.over_repeats(chunk, subj_idx)
        backbone = torch.stack([r.backbone for r in reps]).mean(0)
        clip_voxels = torch.stack([r.backbone if r.clip_voxels is None else r.clip_voxels for r in reps]).mean(0)
        if model.diffusion_prior is not None:
            prior = model.diffusion_prior.p_sample_loop(backbone.shape, backbone, timesteps=prior_steps, generator=gen)
        else:
            prior = backbone     # no prior: the backbone's tokens are the prediction
        for k, v in zip(out, (backbone, clip_voxels, prior)):
            out[k].append(v.float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


@torch.no_grad()
def blurry_recons(model, test_voxels: torch.Tensor, vae, *, batch_size: int = 16, device="cpu",
                  subj_idx: int = 0) -> torch.Tensor:
    """(n,3,256,256) in [0,1]: the blurry branch's latents of the three repeats averaged (spec
    §3.2), decoded by the VAE (§3.5) and resized like the other reconstructions."""
    from fmri_recon.resize import to_output_size
    from fmri_recon.targets.lowlevel import decode_latents

    if not model.cfg.blurry_recon:
        raise ValueError("this brain model has no blurry branch (blurry_recon: false)")
    model = model.to(device).eval()
    out = []
    for start in range(0, len(test_voxels), batch_size):
        chunk = test_voxels[start:start + batch_size].float().to(device)
        latents = torch.stack([r.blur_latent for r in model.over_repeats(chunk, subj_idx)]).mean(0)
        out.append(to_output_size(decode_latents(vae, latents)))
    return torch.cat(out)


def save_outputs(paths: dict[str, Path], arrays: dict) -> None:
    """Write every file atomically, in upstream's dtypes (tokens fp16, images fp32, captions str)."""
    for key, path in paths.items():
        value = arrays[key]
        if key in ("backbones", "clipvoxels", "prior_out"):
            value = value.half()
        elif key == "predcaptions":
            value = np.array(value, dtype=str)
        with helpers.atomic_output(path) as tmp:
            torch.save(value, tmp)
