"""MindEye2's SDXL-unCLIP decoder: bigG image tokens -> images, sampled exactly as upstream.

Upstream (``utils.unclip_recon`` with sgm's ``EulerEDMSampler``; docs/upstream.md §3.4):

- sigmas: ``LegacyDDPMDiscretization`` of the 1000-step scaled-linear schedule (betas
  0.00085..0.012) at the timesteps ``floor(linspace(999, 0, n, endpoint=False))`` (ascending),
  flipped, plus a final 0 -> n+1 sigmas, sigma_max = 14.6146 (``sgm_timesteps``).
- denoiser: eps-prediction with ``c_in = 1/sqrt(1+sigma^2)``, ``c_out = -sigma``, and the UNet
  sees the integer index of sigma in the schedule.
- Euler steps with churn 0: ``x += (sigma_next - sigma) * (x - denoised) / sigma``.
- classifier-free guidance 5 on the denoised image with the batch order [uncond, cond]; the
  UNCONDITIONAL cross-attention input is ``randn_like(tokens)`` (QUIRK), the vector is the same
  for both: sinusoidal embeddings of original size (768, 768) and crop (0, 0).
- start: ``z = randn``, ``noise = randn + 0.04 * randn(B)`` (per-sample offset noise),
  ``x = (z + noise * sigma_0) / sqrt(1+sigma_0^2)``, which the sampler multiplies back by
  ``sqrt(1+sigma_0^2)``: the loop starts at ``z + noise * sigma_0``. Note that ``z`` is itself
  noise (no image), so the start has variance 1 + sigma_0^2 (1 + 0.04^2).
- output: ``clamp(vae.decode(x / 0.13025) * 0.8 + 0.2, 0, 1)`` (QUIRK, not (x+1)/2).

How this maps onto diffusers: ``EulerDiscreteScheduler`` with the same betas, given upstream's
timesteps explicitly (``set_timesteps(timesteps=...)``, ``final_sigmas_type="zero"``), produces the
same timesteps and sigmas, ``scale_model_input`` is c_in, and ``step`` with its default
``s_churn=0`` is the same Euler step (CFG on eps equals CFG on the denoised image because
denoised = x - sigma*eps is affine in eps). Known deviation: diffusers computes alphas_cumprod in
float32, sgm in float64, so sigmas differ by at most ~3e-6 relative. None of diffusers'
``timestep_spacing`` options reproduces upstream's 38-step timesteps ("trailing" gives 973 where
sgm gives 972), hence the explicit list; for 25 steps "trailing" happens to match.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# The decoder folder's own file (written by fmri_recon.decode.weights) and the output mapping it declares.
UNCLIP_DECODER_JSON = "decoder.json"
# Optional file of a decoder folder: the per-(token, feature) mean and std its UNet's conditioning
# was standardised with. Only the tiny trained decoder has one (fmri_recon.decode.tiny_decoders): a
# random tiny CLIP's tokens are 90% the same for every image (its position embeddings), which a
# few hundred CPU steps of cross-attention cannot learn to look past. Upstream's has none.
TOKEN_STATS = "token_stats.safetensors"
OUTPUT_TRANSFORM = "x*0.8+0.2"       # upstream's unCLIP output mapping (QUIRK, not (x+1)/2)
# Optional key of decoder.json: the UNet reads this many coordinate channels (y, x in [-1, 1])
# beside the latent, and its TOKEN_STATS hold a ``position`` code added to the standardised
# tokens. Only the tiny trained decoder has them (``decoder_training.positional``, a deviation
# confined to the demo's model): its only conditioning path is cross-attention, and with neither
# the queries knowing where they are nor the keys which patch they come from (standardising the
# tokens removes the position embeddings they carried) it cannot put a token's content in its
# place in a few CPU minutes. Measured, 800 steps, ground-truth tokens: PixCorr .16 -> .23,
# pixel two-way .63 -> .70; either change alone did not help. Upstream's decoder has neither.
COORD_CHANNELS = "coord_channels"

# diffusers EulerDiscreteScheduler kwargs of upstream's schedule (sgm DiscreteDenoiser +
# LegacyDDPMDiscretization + EpsScaling; Euler without churn).
UPSTREAM_EULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False,
                      timestep_spacing="trailing", steps_offset=0, final_sigmas_type="zero")
TIME_IDS = (768, 768, 0, 0)        # vector_suffix: original_size_as_tuple (768, 768), crop (0, 0)
OFFSET_NOISE = 0.04


def with_coordinates(x, channels: int):
    """``x`` (B, C, H, W) with ``channels`` (0 or 2) coordinate channels, y then x, in [-1, 1]."""
    import torch

    if not channels:
        return x
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype),
                            torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype), indexing="ij")
    return torch.cat([x, torch.stack([ys, xs]).expand(b, 2, h, w)], 1)


def standardised_tokens(tokens, stats: dict):
    """What a decoder with ``TOKEN_STATS`` feeds its UNet: the tokens standardised per (token,
    feature), plus the ``position`` code where the stats have one (COORD_CHANNELS)."""
    out = (tokens - stats["mean"]) / stats["std"]
    return out + stats["position"] if "position" in stats else out


def grid_position_code(seq_len: int, dim: int):
    """(seq_len, dim) fixed code of each token's place on its square patch grid (row, column):
    sines and cosines of ``dim / 4`` octave frequencies of each, scaled to unit std."""
    import torch

    side = int(round(seq_len ** 0.5))
    if side * side != seq_len or dim % 4:
        raise ValueError(f"a position code needs a square token grid and a width divisible by 4, got {seq_len}x{dim}")
    row, col = (torch.arange(seq_len) // side).float(), (torch.arange(seq_len) % side).float()
    freq = 2.0 ** torch.arange(dim // 4) / 2
    code = torch.cat([f(torch.outer(x, freq)) for x in (row, col) for f in (torch.sin, torch.cos)], 1)
    return code / code.std()


def sgm_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Upstream's timesteps, descending: sgm's ``generate_roughly_equally_spaced_steps`` flipped.

    38 steps -> [999, 972, 946, ..., 26]; 25 steps -> [999, 959, ..., 39].
    """
    steps = np.linspace(num_train_timesteps - 1, 0, num_steps, endpoint=False).astype(int)
    return [int(t) for t in steps]


def _scheduler(config, num_steps: int, device):
    """A fresh EulerDiscreteScheduler of ``config`` set to upstream's ``num_steps`` timesteps."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(config)
    for key in ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type"):
        if scheduler.config[key] != UPSTREAM_EULER[key]:
            raise ValueError(f"scheduler {key}={scheduler.config[key]!r}, upstream uses {UPSTREAM_EULER[key]!r}")
    if scheduler.config.use_karras_sigmas or scheduler.config.final_sigmas_type != "zero":
        raise ValueError("scheduler must use the discrete sigmas ending at 0 (no Karras sigmas)")
    scheduler.set_timesteps(timesteps=sgm_timesteps(num_steps, scheduler.config.num_train_timesteps), device=device)
    return scheduler


class UnclipDecoder:
    """The decoder folder of ``weights.build_tiny_unclip`` / ``convert_unclip_checkpoint``, loaded.

    The UNet runs in ``dtype``; latents, the scheduler and the VAE stay in float32 (upstream
    decodes the SDXL VAE outside autocast; its fp16 decode overflows).
    """

    def __init__(self, unet, vae, scheduler_config, meta: dict, device, dtype, token_stats=None):
        if meta.get("output_transform") != OUTPUT_TRANSFORM:
            raise ValueError(f"{UNCLIP_DECODER_JSON}: output_transform {meta.get('output_transform')!r}; "
                             f"only upstream's {OUTPUT_TRANSFORM!r} is implemented")
        self.unet, self.vae, self.scheduler_config, self.meta = unet, vae, scheduler_config, meta
        self.device, self.dtype = device, dtype
        self.token_stats = token_stats       # TOKEN_STATS' tensors, or None: tokens as they are

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype=None) -> "UnclipDecoder":
        import torch
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel

        path = Path(path)
        dtype = dtype or torch.float32
        meta_file = path / UNCLIP_DECODER_JSON
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} missing: not an unCLIP decoder folder")
        meta = json.loads(meta_file.read_text())
        unet = UNet2DConditionModel.from_pretrained(path / "unet", dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(path / "vae", dtype=torch.float32, local_files_only=True)
        scheduler = EulerDiscreteScheduler.from_pretrained(path / "scheduler", local_files_only=True)
        device = torch.device(device)
        stats = None
        if (path / TOKEN_STATS).is_file():
            from safetensors.torch import load_file

            stats = {k: v.to(device) for k, v in load_file(path / TOKEN_STATS).items()}
        return cls(unet.to(device).eval(), vae.to(device).eval(), scheduler.config, meta, device, dtype, stats)

    @property
    def token_shape(self) -> tuple[int, int]:
        """(seq_len, context_dim) of the conditioning tokens."""
        return int(self.meta["seq_len"]), int(self.meta["context_dim"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    def decode(self, tokens, generator=None, *, num_steps: int, guidance: float, batch_size: int):
        """Images (B, 3, S, S) float32 on the CPU in [0, 1] from tokens (B, seq_len, context_dim).

        S = ``image_size`` of decoder.json (768 for unclip6). The UNet sees at most
        ``batch_size`` images at a time (twice that with guidance: the unconditional half).
        Random draws come from ``generator`` (a CPU ``torch.Generator`` is fine on any device)
        image by image in upstream's order (it decodes one image at a time): start latent,
        unconditional tokens, noise, offset noise; so the result is a deterministic function of
        the tokens and the generator's state, whatever ``batch_size`` is.
        """
        import torch

        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != self.token_shape:
            raise ValueError(f"unCLIP tokens: expected (B, {self.token_shape[0]}, {self.token_shape[1]}), "
                             f"got {tuple(tokens.shape)}")
        if batch_size < 1:
            raise ValueError(f"decoder.batch_size: {batch_size}, expected at least 1")
        draws = [self._draws(tokens[i:i + 1], generator) for i in range(len(tokens))]
        out = []
        for start in range(0, len(tokens), batch_size):
            part = draws[start:start + batch_size]
            batch = [torch.cat([d[k] for d in part]) for k in range(4)]
            out.append(self._sample(tokens[start:start + batch_size], *batch, num_steps=num_steps, guidance=guidance))
        return torch.cat(out)

    def _draws(self, tokens, generator):
        """One image's random draws, in upstream's order: (z, uncond tokens, noise, offset)."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        dev = self.device
        # latents are image_size / 2**(VAE levels - 1): 1/8 for SDXL's KL-f8 and the tiny one
        side = self.image_size // 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (1, self.unet.config.in_channels - int(self.meta.get(COORD_CHANNELS, 0)), side, side)
        z = randn_tensor(shape, generator=generator, device=dev, dtype=torch.float32)
        uncond = randn_tensor(tuple(tokens.shape), generator=generator, device=dev, dtype=torch.float32)  # QUIRK
        noise = randn_tensor(shape, generator=generator, device=dev, dtype=torch.float32)
        offset = randn_tensor((1,), generator=generator, device=dev, dtype=torch.float32)
        return z, uncond, noise, offset

    def _sample(self, tokens, z, uncond, noise, offset, *, num_steps: int, guidance: float):
        """Euler sampling with guidance of one UNet batch, then the VAE decode (see the module docstring)."""
        import torch

        dev, b = self.device, tokens.shape[0]
        scheduler = _scheduler(self.scheduler_config, num_steps, dev)
        cond = tokens.to(dev, torch.float32)
        if self.token_stats is not None:     # the unconditional noise tokens stay as they are (QUIRK)
            cond = standardised_tokens(cond, self.token_stats)
        noise = noise + OFFSET_NOISE * offset[:, None, None, None]
        # upstream divides by sqrt(1+sigma_0^2) and its sampler multiplies back: skip both
        x = z + noise * scheduler.sigmas[0].to(dev)

        context = torch.cat([uncond, cond]).to(self.dtype)
        added = {"text_embeds": torch.zeros(2 * b, 0, device=dev, dtype=self.dtype),
                 "time_ids": torch.tensor([TIME_IDS], device=dev, dtype=self.dtype).repeat(2 * b, 1)}
        with torch.no_grad():
            for t in scheduler.timesteps:
                x_in = with_coordinates(scheduler.scale_model_input(x, t), int(self.meta.get(COORD_CHANNELS, 0)))
                eps = self.unet(torch.cat([x_in, x_in]).to(self.dtype), t, encoder_hidden_states=context,
                                added_cond_kwargs=added).sample.float()
                eps_u, eps_c = eps.chunk(2)
                x = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, x).prev_sample
            scale = float(self.meta["vae_scale_factor"])
            # one image at a time: SDXL's VAE decode at 768^2 in float32 is memory hungry
            images = torch.cat([self.vae.decode(x[i:i + 1] / scale).sample.float().cpu() for i in range(b)])
        return torch.clamp(images * 0.8 + 0.2, 0.0, 1.0)    # QUIRK: upstream's output transform
