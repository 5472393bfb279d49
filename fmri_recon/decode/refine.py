"""Refinement of unCLIP reconstructions with SDXL img2img, prompted by the predicted captions.

Upstream (``enhanced_recon_inference.ipynb``; docs/upstream.md §4): recons (256^2) upsampled to 768^2
(bilinear), SDXL base architecture with ZavyChromaXL v3 weights, prompt = predicted GIT caption,
a fixed negative prompt, guidance 5, size conditioning original 768^2 / crop (0, 0) / target
1024^2 for both branches, sgm's Euler sampler over the 25-step schedule started at
``img2img_timepoint=13``: ``x = VAE.encode(2*recon-1)*0.13025 + eps*sigmas[13]`` and 12 Euler
steps over ``sigmas[13:]`` down to 0, decoded as ``clamp((x+1)/2)``.

diffusers' ``StableDiffusionXLImg2ImgPipeline`` does the same given: upstream's timesteps
(``unclip.sgm_timesteps(25)``: 999, 959, ..., 39, which are also diffusers' "trailing"
spacing for 25 steps), an Euler scheduler with upstream's betas, and
``strength = (steps - timepoint) / steps = 12/25 = 0.48``: the pipeline keeps
``int(steps*strength) = 12`` steps, i.e. ``t_start = 13``, adds noise at ``sigmas[13]``
(t = 479, sigma = 1.509) with Euler's ``add_noise`` (x = z + eps*sigma) and runs the 12 steps.
Its VAE encode samples the posterior as sgm's does, and ``output_type="pt"`` is (x+1)/2 clamped.
"""
from __future__ import annotations

from pathlib import Path

UPSTREAM_NEGATIVE = (
    "painting, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, deformed, ugly, blurry, "
    "bad anatomy, bad proportions, extra limbs, cloned face, skinny, glitchy, double torso, extra arms, "
    "extra hands, mangled fingers, missing lips, ugly face, distorted face, extra legs, anime")
UPSTREAM_STEPS = 25
IMG2IMG_TIMEPOINT = 13


def upstream_strength(steps: int = UPSTREAM_STEPS, timepoint: int = IMG2IMG_TIMEPOINT) -> float:
    """diffusers ``strength`` that starts at sgm's ``sigmas[timepoint]`` of a ``steps``-step schedule."""
    if not 0 <= timepoint < steps:
        raise ValueError(f"img2img timepoint {timepoint} outside 0..{steps - 1}")
    return (steps - timepoint) / steps


UPSTREAM_STRENGTH = upstream_strength()          # 0.48


def load_pipeline(path: str | Path, *, device="cpu", dtype=None, cpu_offload: bool = False,
                  single_file_config: str | Path | None = None):
    """``StableDiffusionXLImg2ImgPipeline`` from a folder or a single .safetensors file, with upstream's sampler.

    A single file (e.g. zavychromaxl_v30.safetensors) needs the SDXL base configs and tokenizers:
    ``single_file_config`` is a local folder of them (``weights.SDXL_CONFIG_PATTERNS``); without
    it diffusers fetches them from the hub.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline

    from fmri_recon.decode.unclip import UPSTREAM_EULER

    path = Path(path)
    dtype = dtype or torch.float32
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: a single-file SDXL checkpoint must be .safetensors")
        extra = {"config": str(single_file_config), "local_files_only": True} if single_file_config else {}
        pipe = StableDiffusionXLImg2ImgPipeline.from_single_file(str(path), dtype=dtype, **extra)
    elif path.is_dir():
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                                add_watermarker=False)
    else:
        raise FileNotFoundError(f"{path}: no SDXL pipeline folder or single-file checkpoint there")
    if pipe.config.requires_aesthetics_score:
        raise ValueError(f"{path}: a refiner-style pipeline (aesthetic-score conditioning); upstream uses SDXL base")
    pipe.watermark = None            # upstream adds no invisible watermark
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, **UPSTREAM_EULER)
    if cpu_offload and torch.cuda.is_available():
        pipe.enable_model_cpu_offload()
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def refine(pipe, images, prompts: list[str], *, steps: int, guidance: float, size: int, seed: int,
           batch_size: int, strength: float = UPSTREAM_STRENGTH):
    """Refined images (B, 3, 256, 256) float32 on the CPU in [0, 1].

    ``images`` (B, 3, H, W) in [0, 1] (upstream: the 256^2 unCLIP recons) are upsampled to
    ``size`` (bilinear), refined with prompt ``prompts[i]``, and downsampled to 256
    (``images.to_output_size``: bilinear without antialiasing, upstream's torchvision 0.16 tensor Resize).
    ``pipe`` comes from ``load_pipeline``; the settings are the config's ``refine`` block (defaults in
    the schema only). One CPU generator seeded with ``seed`` serves all batches in order, so a run is
    deterministic for (seed, batch_size).
    """
    import torch

    from fmri_recon.resize import resize, to_output_size
    from fmri_recon.decode.unclip import sgm_timesteps

    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    generator = torch.Generator("cpu").manual_seed(seed)
    sizes = dict(original_size=(768, 768), target_size=(1024, 1024), crops_coords_top_left=(0, 0),
                 negative_original_size=(768, 768), negative_target_size=(1024, 1024),
                 negative_crops_coords_top_left=(0, 0))
    out = []
    for i in range(0, len(images), batch_size):
        batch = images[i:i + batch_size].float().clamp(0, 1)
        batch = resize(batch, [size, size])
        refined = pipe(prompt=list(prompts[i:i + batch_size]), negative_prompt=[UPSTREAM_NEGATIVE] * len(batch),
                       image=batch, strength=strength, timesteps=sgm_timesteps(steps), guidance_scale=guidance,
                       generator=generator, output_type="pt", **sizes).images
        out.append(to_output_size(refined))
    return torch.cat(out)
