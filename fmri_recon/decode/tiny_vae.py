"""Training shared by the tiny decoders of the demo (``weights: train``), and the blurry branch's
tiny VAE: which images they may learn from, the AdamW loop, the autoencoder fit, and the report
each folder gets (``training.json``: the image ids trained on, the settings, the loss curve's
first and last values). fmri_recon.decode.tiny_decoders trains the unCLIP decoder, GIT and the SD-XL
refiner with it; rule train_lowlevel uses this module alone, so it needs none of their libraries.

The VAE (``train_vae``): an autoencoder (MSE + a small KL term), its latent channels standardised
(folded into its quant convs) and its scale measured as LDM does (1 / std of the train latents).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers

TRAINING_JSON = "training.json"
LOWLEVEL_CROP = 64            # training windows of the low-level VAE (its latents are 1/8 of that)
LOWLEVEL_STATS_IMAGES = 64    # images whose latents set its channel statistics


def train_ids(all_ids: np.ndarray, test_ids: np.ndarray) -> np.ndarray:
    """The images a decoder may learn from: every image of the run that is not a test image."""
    ids = np.setdiff1d(np.asarray(all_ids), np.asarray(test_ids))
    if len(ids) == 0:
        raise ValueError("decoder training: no train images (every image of the run is a test image)")
    return ids


def batches(n: int, batch_size: int, steps: int, rng: np.random.Generator):
    """``steps`` index batches, epoch by epoch through a fresh permutation of ``n`` items."""
    order = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = [*order, *rng.permutation(n)]
        yield np.array(order[:batch_size])
        order = order[batch_size:]


def fit(params, steps: int, lr: float, loss_of_step) -> list[float]:
    """AdamW with a cosine decay over ``steps``; returns the loss of every step."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for step in range(steps):
        loss = loss_of_step(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    return losses


def summary(losses: list[float]) -> dict:
    k = max(len(losses) // 10, 1)
    return {"steps": len(losses), "first_loss": float(np.mean(losses[:k])), "last_loss": float(np.mean(losses[-k:]))}


def train_vae(vae, images: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
              kl_weight: float = 1e-6, crop: int | None = None, stats_images: int | None = None,
              latent_std: float = 1.0) -> dict:
    """Fit ``vae`` (diffusers AutoencoderKL) to reconstruct ``images`` (N,3,S,S) in [0,1]; fold its
    latent channels to zero mean and std ``latent_std`` and set its ``scaling_factor`` to 1 / std
    of the train latents. Returns the loss summary and the scale.
    ``crop``: train on random ``crop`` x ``crop`` windows (a convolutional autoencoder learns the
    same local code from them, at a fraction of the cost of whole 224 px images);
    ``stats_images``: the channel statistics from that many random images (default: all)."""
    rng = np.random.default_rng(seed)
    order = list(batches(len(images), batch_size, steps, rng))
    vae.train().requires_grad_(True)

    def step(i):
        x = 2 * windows(images[order[i]], crop, rng) - 1
        post = vae.encode(x).latent_dist
        # the posterior's mode, not a sample: at initialisation its noise (std 1) drowns the latents,
        # and with so small a KL weight it is an autoencoder anyway (the decoders use the mode too)
        rec = vae.decode(post.mode()).sample
        return torch.nn.functional.mse_loss(rec, x) + kl_weight * post.kl().mean()

    losses = fit(vae.parameters(), steps, lr, step)
    vae.eval().requires_grad_(False)
    stats = images[rng.permutation(len(images))[:stats_images]] if stats_images else images
    scale = float(1 / standardise_latent_channels(vae, latent_modes(vae, stats), std=latent_std).std())
    vae.register_to_config(scaling_factor=scale)
    return {**summary(losses), "scaling_factor": scale}


def windows(images: torch.Tensor, crop: int | None, rng: np.random.Generator) -> torch.Tensor:
    """One random ``crop``-pixel window of each image (all of it without ``crop``), on the latent grid."""
    if crop is None or crop >= images.shape[-1]:
        return images
    grid = (images.shape[-1] - crop) // 8 + 1
    ys, xs = rng.integers(grid, size=len(images)) * 8, rng.integers(grid, size=len(images)) * 8
    return torch.stack([im[:, y:y + crop, x:x + crop] for im, y, x in zip(images, ys, xs)])


def standardise_latent_channels(vae, modes: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Fold each latent channel's train mean and std into ``vae``'s 1x1 quant convs, so its latents
    are zero-mean with std ``std`` per channel while it decodes exactly as before. A freshly trained
    tiny VAE has one channel 4x narrower than the others; its signal then sits below the noise the
    UNet learns to remove, and sampling leaves it noisy.
    Returns ``modes`` as the changed VAE encodes them."""
    c = modes.shape[1]
    mean, std = modes.mean((0, 2, 3)), modes.std((0, 2, 3)) / std
    q, pq = vae.quant_conv, vae.post_quant_conv
    with torch.no_grad():
        q.weight[:c] /= std[:, None, None, None]
        q.bias[:c] = (q.bias[:c] - mean) / std
        q.bias[c:] -= 2 * std.log()                      # the posterior's log-variance, same scale
        pq.bias += pq.weight[:, :, 0, 0] @ mean          # z = std * z' + mean
        pq.weight *= std[None, :, None, None]
    return (modes - mean[:, None, None]) / std[:, None, None]


# The unCLIP decoder's output is ``x*0.8+0.2`` of its VAE's (upstream's QUIRK), where SD-XL's
# pipelines read ``(x+1)/2``. The trained unCLIP decoder keeps the VAE trained in SD-XL's range and
# folds the change of range into its decoder's last conv (exact: an affine map of the output).
# Encoding the unCLIP range instead does not work: this tiny VAE normalises every channel right
# after its first conv and so cannot see a range it was not trained on (a red cast, RGB means
# .49/.25/.18 for .47/.41/.40; trained on both ranges it learnt neither).
def latent_modes(vae, images: torch.Tensor) -> torch.Tensor:
    """The posterior modes of ``images`` in [0, 1] (unscaled), 64 at a time."""
    with torch.no_grad():
        return torch.cat([vae.encode(2 * images[i:i + 64] - 1).latent_dist.mode() for i in range(0, len(images), 64)])


def training_report(ids: np.ndarray, **items) -> dict:
    return {"train_image_ids": [int(i) for i in ids], "images": int(len(ids)), **items}


def train_lowlevel_vae(vae, images: torch.Tensor, ids: np.ndarray, out_file, *, steps: int, batch_size: int,
                       lr: float, seed: int) -> dict:
    """The blurry branch's tiny VAE (``fmri_recon.targets.lowlevel``'s TINY_VAE) trained as an autoencoder
    on the 224 px train ``images`` (windows of LOWLEVEL_CROP px), its latent channels folded to
    zero mean and the spread SD's VAE gives (unit std once scaled by ``lowlevel.VAE_SCALE``, which
    the blurry branch applies), written as upstream's ``sd_image_var_autoenc.pth`` is: a state dict.
    ``training.json`` beside it lists the image ids."""
    from fmri_recon.targets.lowlevel import VAE_SCALE

    torch.manual_seed(seed)
    report = train_vae(vae, images, steps=steps, batch_size=batch_size, lr=lr, seed=seed, crop=LOWLEVEL_CROP,
                       stats_images=LOWLEVEL_STATS_IMAGES, latent_std=1 / VAE_SCALE)
    report.pop("scaling_factor")       # the blurry branch scales by upstream's constant, not by this
    out_file = Path(out_file)
    with helpers.atomic_output(out_file) as tmp:
        torch.save(vae.state_dict(), tmp)
    report = training_report(ids, vae=report, crop=LOWLEVEL_CROP, batch_size=batch_size, lr=lr, seed=seed)
    helpers.write_json(out_file.parent / TRAINING_JSON, report)
    return report
