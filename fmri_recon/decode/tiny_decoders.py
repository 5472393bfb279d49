"""Tiny decoders trained on a dataset's train images, so the demo reconstructs (``weights: train``).

A randomly initialised decoder makes every image metric score chance and cannot tell a decode
path that uses its conditioning from one that ignores it. These trainings start from the tiny
random models of ``fmri_recon.decode.weights`` (same classes, same folder formats as the real ones) and
teach them, on the train images only, what the real models learnt on LAION and COCO:

- unCLIP (``train_unclip``): the VAE as an autoencoder (fmri_recon.decode.tiny_vae), its output
  range then folded into the unCLIP decoder's
  (``fold_output_range``), then the UNet as an eps-predicting denoiser over upstream's 1000-step
  schedule (its loss weighted as v-prediction's), cross-attending to the images' CLIP tokens in the
  configured token space, standardised per token and feature with the train images' statistics
  (``unclip.TOKEN_STATS``, which the decoder applies too); a fraction of the tokens is replaced by
  ``randn_like`` noise, which is what upstream's sampler feeds its unconditional branch (QUIRK,
  fmri_recon.decode.unclip). Timesteps are drawn with density growing linearly in t: an image's content
  is decided at high noise, the low-noise steps only sharpen it.
- GIT (``train_git``): the whole captioner on (image, COCO-style caption) pairs with its own
  causal LM loss; the random model's ban on [SEP] is lifted so it learns where captions end.
- SD-XL img2img (``train_sdxl``): the trained unCLIP VAE (SD-XL-unCLIP shares SD-XL's VAE too),
  and the UNet as a text-conditioned denoiser (frozen random text encoders, captions dropped to
  upstream's negative prompt at ``drop_rate`` for guidance), on the timesteps refinement uses
  (below upstream's img2img start, t < 500) since nothing else ever runs.

Each folder gets ``training.json`` (fmri_recon.decode.tiny_vae.training_report): the image ids
trained on (tests check no test image is among them), the settings and the loss curve's first and
last values.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers
from fmri_recon.decode import tiny_vae
from fmri_recon.decode.tiny_vae import TRAINING_JSON
from fmri_recon.decode.weights import TINY_SDXL_VAE

log = logging.getLogger(__name__)

# The trained unCLIP decoder works at 32 px with latents of 8x8x4 (two downsamples): a CPU
# trains its VAE in seconds at that size, and 12x compression keeps the images' layout.
TRAINED_IMAGE_SIZE = 32
TRAINED_VAE = {**TINY_SDXL_VAE, "ch_mult": (1, 1, 1)}
REFINE_MAX_T = 500            # refinement starts at t = 479 (refine.UPSTREAM_STRENGTH of 25 steps)


def _to_size(images: torch.Tensor, size: int) -> torch.Tensor:
    from fmri_recon.resize import resize

    return images if images.shape[-1] == size else resize(images, [size, size]).clamp(0, 1)


UNCLIP_FROM_SDXL = (1 / 1.6, 0.375)     # x*0.8+0.2 of (y/1.6 + 0.375) is (y+1)/2


def fold_output_range(vae, scale: float, shift: float) -> None:
    """Make ``vae``'s decoder output ``scale * y + shift`` where it output ``y``."""
    conv = vae.decoder.conv_out
    with torch.no_grad():
        conv.weight *= scale
        conv.bias.mul_(scale).add_(shift)


def _content_timesteps(n: int, num_train_timesteps: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` timesteps with density proportional to t (sqrt of a uniform draw): twice the uniform
    draw's share of high-noise steps, where the conditioning decides what the image shows."""
    u = torch.rand(n, generator=gen)
    return (num_train_timesteps * u.sqrt()).long().clamp(0, num_train_timesteps - 1)


def _latents(vae, images: torch.Tensor) -> torch.Tensor:
    """What a diffusion model of ``vae`` denoises: the scaled modes."""
    return tiny_vae.latent_modes(vae, images) * vae.config.scaling_factor


def _x0_weighted_mse(pred: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The eps error weighted by 1 / alphas_cumprod (the eps error plus the x0 error it implies: the
    weighting of v-prediction), normalised to a mean weight of 1 per batch. Plain eps-MSE leaves the
    high-noise x0 estimates 3-5x worse than predicting the mean image, since x0's error there is 200x
    eps'; the sampler starts there. Measured 400 steps, GT tokens, g5: PixCorr .10 -> .15, SSIM .39 -> .53."""
    w = 1 / alphas_cumprod
    return (w[:, None, None, None] * (pred - eps) ** 2).mean() / w.mean()


def _noised(scheduler, z0: torch.Tensor, t: torch.Tensor, gen: torch.Generator):
    """(x_t, eps) of upstream's eps-prediction schedule (the VP form the Euler sampler scales back to)."""
    eps = torch.randn(z0.shape, generator=gen)
    acp = scheduler.alphas_cumprod[t].float()[:, None, None, None]
    return acp.sqrt() * z0 + (1 - acp).sqrt() * eps, eps


# ------------------------------------------------------------------ the blurry branch's VAE
# ------------------------------------------------------------------ unCLIP decoder
def train_unclip(init_dir, out_dir, images: torch.Tensor, tokens: torch.Tensor, ids: np.ndarray, *,
                 vae_steps: int, unet_steps: int, batch_size: int, lr: float, drop_rate: float, seed: int) -> dict:
    """The tiny unCLIP decoder folder ``init_dir`` trained on ``images`` (N,3,S,S) and their CLIP
    ``tokens`` (N, seq_len, context_dim), written to ``out_dir`` in the same layout."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from safetensors.torch import save_file

    from fmri_recon.decode.unclip import (COORD_CHANNELS, TIME_IDS, TOKEN_STATS, UNCLIP_DECODER_JSON, grid_position_code,
                         standardised_tokens, with_coordinates)

    init_dir = Path(init_dir)
    meta = _read_json(init_dir / UNCLIP_DECODER_JSON)
    if tuple(tokens.shape[1:]) != (meta["seq_len"], meta["context_dim"]):
        raise ValueError(f"{init_dir}: decoder conditioned on ({meta['seq_len']}, {meta['context_dim']}) tokens, "
                         f"the targets are {tuple(tokens.shape[1:])}")
    images = _to_size(images, meta["image_size"])
    tokens = tokens.float()
    stats = {"mean": tokens.mean(0), "std": tokens.std(0) + 1e-3}
    if meta.get(COORD_CHANNELS):          # the positional deviation (fmri_recon.decode.unclip.COORD_CHANNELS)
        stats["position"] = grid_position_code(*tokens.shape[1:])
    tokens = standardised_tokens(tokens, stats)
    torch.manual_seed(seed)
    vae = AutoencoderKL.from_pretrained(init_dir / "vae", local_files_only=True)
    vae_report = tiny_vae.train_vae(vae, images, steps=vae_steps, batch_size=batch_size, lr=lr, seed=seed)
    z0 = _latents(vae, images)
    fold_output_range(vae, *UNCLIP_FROM_SDXL)

    unet = UNet2DConditionModel.from_pretrained(init_dir / "unet", local_files_only=True).train()
    scheduler = DDPMScheduler.from_pretrained(init_dir / "scheduler", local_files_only=True)
    gen = torch.Generator().manual_seed(seed)
    batches = list(tiny_vae.batches(len(images), batch_size, unet_steps, np.random.default_rng(seed + 1)))
    time_ids = torch.tensor([TIME_IDS], dtype=torch.float32).repeat(batch_size, 1)
    added = {"text_embeds": torch.zeros(batch_size, 0), "time_ids": time_ids}

    def step(i):
        idx = batches[i]
        t = _content_timesteps(len(idx), scheduler.config.num_train_timesteps, gen)
        x_t, eps = _noised(scheduler, z0[idx], t, gen)
        cond = tokens[idx]
        drop = torch.rand(len(idx), generator=gen) < drop_rate
        cond = torch.where(drop[:, None, None], torch.randn(cond.shape, generator=gen), cond)
        pred = unet(with_coordinates(x_t, meta.get(COORD_CHANNELS, 0)), t, encoder_hidden_states=cond,
                    added_cond_kwargs=added).sample
        return _x0_weighted_mse(pred, eps, scheduler.alphas_cumprod[t].float())

    unet_report = tiny_vae.summary(tiny_vae.fit(unet.parameters(), unet_steps, lr, step))
    with helpers.atomic_dir(out_dir) as tmp:
        unet.eval().save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        shutil.copytree(init_dir / "scheduler", tmp / "scheduler")
        save_file({k: v.contiguous() for k, v in stats.items()}, tmp / TOKEN_STATS)
        helpers.write_json(tmp / UNCLIP_DECODER_JSON, {**meta, "vae_scale_factor": vae.config.scaling_factor})
        report = tiny_vae.training_report(ids, vae=vae_report, unet=unet_report, batch_size=batch_size, lr=lr, drop_rate=drop_rate,
                         seed=seed)
        helpers.write_json(tmp / TRAINING_JSON, report)
    return report


def _read_json(path: Path) -> dict:
    import json

    return json.loads(helpers.need(path).read_text())


# ------------------------------------------------------------------ GIT captioner
def train_git(init_dir, out_dir, images: torch.Tensor, captions: list[str], ids: np.ndarray, *,
              steps: int, batch_size: int, lr: float, seed: int) -> dict:
    """The tiny GIT folder ``init_dir`` trained to caption ``images`` (N,3,S,S) in [0,1] with
    ``captions`` (GIT's causal LM loss on the caption tokens, padding ignored)."""
    from transformers import AutoProcessor, GitForCausalLM

    torch.manual_seed(seed)
    model = GitForCausalLM.from_pretrained(init_dir, local_files_only=True).train()
    processor = AutoProcessor.from_pretrained(init_dir, local_files_only=True)
    sep = processor.tokenizer.sep_token_id
    with torch.no_grad():
        model.output.bias[sep] = 0.0             # the random model may never stop; a trained one must
    pixels = processor.image_processor(images=list(images.float()), do_rescale=False, return_tensors="pt")["pixel_values"]
    text = processor.tokenizer(list(captions), padding=True, return_tensors="pt")
    unknown = int((text.input_ids == processor.tokenizer.unk_token_id).sum())
    if unknown:
        raise ValueError(f"{init_dir}: {unknown} caption words are not in GIT's vocabulary")
    labels = text.input_ids.masked_fill(text.attention_mask == 0, -100)
    batches = list(tiny_vae.batches(len(images), batch_size, steps, np.random.default_rng(seed)))

    def step(i):
        idx = torch.from_numpy(batches[i])
        return model(input_ids=text.input_ids[idx], attention_mask=text.attention_mask[idx], pixel_values=pixels[idx],
                     labels=labels[idx]).loss

    losses = tiny_vae.fit(model.parameters(), steps, lr, step)
    with helpers.atomic_dir(out_dir) as tmp:
        model.eval().save_pretrained(tmp)
        processor.save_pretrained(tmp)
        report = tiny_vae.training_report(ids, git=tiny_vae.summary(losses), batch_size=batch_size, lr=lr, seed=seed)
        helpers.write_json(tmp / TRAINING_JSON, report)
    return report


# ------------------------------------------------------------------ SD-XL img2img
def train_sdxl(init_dir, vae_dir, out_dir, images: torch.Tensor, captions: list[str], ids: np.ndarray, *,
               size: int, steps: int, batch_size: int, lr: float, drop_rate: float, seed: int) -> dict:
    """The tiny SD-XL img2img folder ``init_dir`` with the VAE of ``vae_dir`` (a trained unCLIP
    decoder's ``vae/``, its output range folded back to SD-XL's) and its UNet trained to denoise
    the ``size`` px ``images`` given ``captions``."""
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline

    from fmri_recon.decode.refine import UPSTREAM_NEGATIVE

    torch.manual_seed(seed)
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(init_dir, local_files_only=True)
    pipe.vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
    fold_output_range(pipe.vae, 1 / UNCLIP_FROM_SDXL[0], -UNCLIP_FROM_SDXL[1] / UNCLIP_FROM_SDXL[0])  # back to SD-XL's
    z0 = _latents(pipe.vae, _to_size(images, size))
    with torch.no_grad():
        prompts = [*captions, UPSTREAM_NEGATIVE]
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device="cpu", do_classifier_free_guidance=False)
    # SD-XL base's vector: pooled text + original size, crop, target size (refine.refine's values)
    time_ids = torch.tensor([[768, 768, 0, 0, 1024, 1024]], dtype=torch.float32)
    unet, scheduler = pipe.unet.train(), pipe.scheduler
    gen = torch.Generator().manual_seed(seed)
    batches = list(tiny_vae.batches(len(images), batch_size, steps, np.random.default_rng(seed + 1)))

    def step(i):
        idx = torch.from_numpy(batches[i])
        t = torch.randint(0, REFINE_MAX_T, (len(idx),), generator=gen)
        x_t, eps = _noised(scheduler, z0[idx], t, gen)
        text = torch.where(torch.rand(len(idx), generator=gen) < drop_rate, len(captions), idx)
        added = {"text_embeds": pooled[text], "time_ids": time_ids.repeat(len(idx), 1)}
        pred = unet(x_t, t, encoder_hidden_states=embeds[text], added_cond_kwargs=added).sample
        return torch.nn.functional.mse_loss(pred, eps)

    losses = tiny_vae.fit(unet.parameters(), steps, lr, step)
    with helpers.atomic_dir(out_dir) as tmp:
        pipe.unet.eval()
        pipe.save_pretrained(tmp)
        report = tiny_vae.training_report(ids, unet=tiny_vae.summary(losses), size=size, max_timestep=REFINE_MAX_T, batch_size=batch_size,
                         lr=lr, drop_rate=drop_rate, seed=seed)
        helpers.write_json(tmp / TRAINING_JSON, report)
    return report
