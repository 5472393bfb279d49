"""Diffusion prior: brain tokens -> CLIP image tokens (MindEye2, docs/upstream.md §2.5).

A compact reimplementation of the dalle2-pytorch prior as MindEye2 configures it, written
from the spec (docs/upstream.md §2.5 and Appendix A), not from upstream code.
Module names and nesting are chosen so that ``state_dict()`` keys and shapes are exactly
upstream's (``net.to_time_embeds.0.1.net.0.0.weight``, ``net.causal_transformer.layers.
{l}.0.to_kv.weight``, ...), which is why a few parameter-free placeholders (an Identity,
a zero Dropout, an Unflatten) sit in Sequentials: they keep the indices right.

The network sees one sequence per sample, 2S+1 tokens long:

    [ brain tokens (S) | time token (1) | noisy image tokens + learned pos emb (S) ]

and predicts x0 (the clean image tokens) from its last S outputs.  Sampling uses dalle2's
DDIM (eta=1) when fewer steps than the training T are asked for, ancestral DDPM otherwise.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from fmri_recon.models.prior_layers import PriorTransformer, SinusoidalPosEmb, TimeMLP, keep_mask


@dataclass
class PriorConfig:
    dim: int = 1664              # E: CLIP token width (bigG)
    depth: int = 6
    dim_head: int = 52
    heads: int = 32              # upstream uses dim // dim_head
    num_tokens: int = 256        # S: CLIP tokens per image
    timesteps: int = 100         # T of the training noise schedule
    cond_drop_prob: float = 0.2  # classifier-free-guidance dropout, brain and image alike
    learned_query_mode: str = "pos_emb"

    def __post_init__(self):
        if self.learned_query_mode != "pos_emb":
            raise ValueError(f"learned_query_mode {self.learned_query_mode!r}: only 'pos_emb' is implemented")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PriorConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"PriorConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


# ----------------------------------------------------------------------------- the network

class PriorNetwork(nn.Module):
    """Predicts clean image tokens (B,S,E) from noisy ones, the timestep and brain tokens."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        E, S = cfg.dim, cfg.num_tokens
        self.num_tokens = S
        # [0][0] sinusoid, [0][1] MLP, [1] (B,E) -> (B,1,E): one time token
        self.to_time_embeds = nn.Sequential(
            nn.Sequential(SinusoidalPosEmb(E), TimeMLP(E, E)),
            nn.Unflatten(-1, (1, E)),
        )
        self.learned_query = nn.Parameter(torch.randn(S, E) * E ** -0.5)  # pos emb of image tokens
        self.null_brain_embeds = nn.Parameter(torch.randn(S, E))          # CFG "no brain" tokens
        self.null_image_embed = nn.Parameter(torch.randn(S, E))           # CFG "no image" tokens
        self.causal_transformer = PriorTransformer(E, cfg.depth, cfg.dim_head, cfg.heads)

    def forward(self, image_embed, times, brain_embed, brain_cond_drop_prob: float = 0.0,
                image_cond_drop_prob: float = 0.0):
        """image_embed (B,S,E) noisy tokens, times (B,) int, brain_embed (B,S,E) -> (B,S,E)."""
        b, device = image_embed.shape[0], image_embed.device
        # Tokens live in the parameters' dtype: float32 under autocast (as upstream, whose
        # concat promotes the fp16 brain tokens to the fp32 noisy tokens), half if .half().
        dtype = self.learned_query.dtype
        brain_embed = torch.where(keep_mask(b, 1 - brain_cond_drop_prob, device),
                                  brain_embed.to(dtype), self.null_brain_embeds)
        image_embed = torch.where(keep_mask(b, 1 - image_cond_drop_prob, device),
                                  image_embed.to(dtype), self.null_image_embed)
        image_embed = image_embed + self.learned_query          # added after the null swap
        time_embed = self.to_time_embeds(times).to(dtype)
        tokens = torch.cat((brain_embed, time_embed, image_embed), dim=1)
        return self.causal_transformer(tokens)[:, -self.num_tokens:]

    def forward_with_cond_scale(self, image_embed, times, brain_embed, cond_scale: float = 1.0):
        """Classifier-free guidance; the unconditional pass drops brain *and* image (dalle2)."""
        logits = self.forward(image_embed, times, brain_embed)
        if cond_scale == 1:
            return logits
        null_logits = self.forward(image_embed, times, brain_embed,
                                   brain_cond_drop_prob=1.0, image_cond_drop_prob=1.0)
        return null_logits + (logits - null_logits) * cond_scale


# ----------------------------------------------------------------------------- the diffusion

def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal cosine schedule in float64, betas clipped to [0, 0.999]."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alphas_cumprod = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, 0.999)


class NoiseScheduler(nn.Module):
    """DDPM bookkeeping; all of dalle2's buffers are kept (float32) so checkpoints load strictly."""

    def __init__(self, timesteps: int = 100):
        super().__init__()
        self.num_timesteps = timesteps
        betas = cosine_beta_schedule(timesteps)
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = {
            "betas": betas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
            "log_one_minus_alphas_cumprod": torch.log(1.0 - ac),
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1).sqrt(),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": torch.log(post_var.clamp(min=1e-20)),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
            "p2_loss_weight": torch.ones_like(betas),  # p2 gamma = 0: unused by the prior
        }
        for name, val in buffers.items():
            self.register_buffer(name, val.to(torch.float32))

    @staticmethod
    def _at(a, t, x):
        """a[t] per sample, shaped to broadcast against x."""
        return a.gather(-1, t).reshape(t.shape[0], *([1] * (x.ndim - 1))).to(x.dtype)

    def q_sample(self, x_start, t, noise):
        return self._at(self.sqrt_alphas_cumprod, t, x_start) * x_start + \
            self._at(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise

    def predict_noise_from_start(self, x_t, t, x0):
        return (self._at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / \
            self._at(self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def q_posterior(self, x_start, x_t, t):
        mean = self._at(self.posterior_mean_coef1, t, x_t) * x_start + \
            self._at(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, self._at(self.posterior_log_variance_clipped, t, x_t)


def ddim_time_pairs(total_timesteps: int, sampling_timesteps: int) -> list[tuple[int, int]]:
    """dalle2's DDIM (t, t_next) pairs: linspace(-1, T, n+1)[:-1], truncated, reversed.

    T=100, 20 steps -> (94,89), (89,84), ..., (9,4), (4,-1); t_next = -1 means "return x0"."""
    times = torch.linspace(-1.0, total_timesteps, steps=sampling_timesteps + 1)[:-1]
    times = list(reversed(times.int().tolist()))
    return list(zip(times[:-1], times[1:]))


class BrainDiffusionPrior(nn.Module):
    """x0-predicting diffusion prior over CLIP image tokens, conditioned on brain tokens.

    Upstream names the condition ``text_embed`` (it reuses dalle2's text slot); so do we."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.cfg = cfg
        self.net = PriorNetwork(cfg)
        self.noise_scheduler = NoiseScheduler(cfg.timesteps)

    @property
    def num_timesteps(self) -> int:
        return self.noise_scheduler.num_timesteps

    def forward(self, text_embed, image_embed, times=None, noise=None):
        """Training loss.  text_embed: brain tokens (B,S,E); image_embed: CLIP targets (B,S,E),
        used raw (no image_embed_scale, as upstream).  Returns (mse loss, x0 prediction).

        ``times``/``noise`` default to t ~ U{0..T-1} and N(0,1); pass them for a repeatable
        loss.  CFG dropout (cfg.cond_drop_prob) applies in eval mode too, as upstream's
        validation loss uses the same call."""
        b = image_embed.shape[0]
        if times is None:
            times = torch.randint(0, self.num_timesteps, (b,), device=image_embed.device)
        if noise is None:
            noise = torch.randn_like(image_embed)
        x_t = self.noise_scheduler.q_sample(image_embed, times, noise)
        p = self.cfg.cond_drop_prob
        pred = self.net(x_t, times, text_embed, brain_cond_drop_prob=p, image_cond_drop_prob=p)
        return F.mse_loss(pred.float(), image_embed.float()), pred

    @torch.no_grad()
    def p_sample_loop(self, shape, text_cond, cond_scale: float = 1.0, timesteps: int = 20,
                      generator: torch.Generator | None = None):
        """Sample image tokens of ``shape`` (B,S,E).  text_cond: brain tokens, or upstream's
        ``{'text_embed': tokens}``.  DDIM (eta=1) when timesteps < T, else ancestral DDPM.
        Upstream does not divide the result by an image_embed_scale, nor do we."""
        brain = text_cond["text_embed"] if isinstance(text_cond, dict) else text_cond
        if timesteps > self.num_timesteps:
            raise ValueError(f"timesteps {timesteps} > training timesteps {self.num_timesteps}")
        randn = _randn_fn(brain.device, generator)
        if timesteps < self.num_timesteps:
            return self._ddim(shape, brain, cond_scale, timesteps, randn)
        return self._ddpm(shape, brain, cond_scale, randn)

    def _ddim(self, shape, brain, cond_scale, timesteps, randn, eta: float = 1.0):
        ns = self.noise_scheduler
        # QUIRK (spec 2.5): dalle2 reads alpha from alphas_cumprod_prev, i.e. alpha_bar(t-1)
        # for step t, while predict_noise_from_start uses alpha_bar(t). Kept for parity.
        alphas = ns.alphas_cumprod_prev
        x = randn(shape)
        for t, t_next in ddim_time_pairs(self.num_timesteps, timesteps):
            t_batch = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            x_start = self.net.forward_with_cond_scale(x, t_batch, brain, cond_scale)
            if t_next < 0:
                return x_start
            pred_noise = ns.predict_noise_from_start(x, t_batch, x_start)
            alpha, alpha_next = alphas[t], alphas[t_next]
            c1 = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()
            c2 = ((1 - alpha_next) - c1 ** 2).sqrt()
            noise = randn(shape) if t_next > 0 else 0.0
            x = x_start * alpha_next.sqrt() + c1 * noise + c2 * pred_noise
        return x

    def _ddpm(self, shape, brain, cond_scale, randn):
        ns = self.noise_scheduler
        x = randn(shape)
        for t in reversed(range(self.num_timesteps)):
            t_batch = torch.full((shape[0],), t, device=x.device, dtype=torch.long)
            x_start = self.net.forward_with_cond_scale(x, t_batch, brain, cond_scale)
            mean, log_var = ns.q_posterior(x_start, x, t_batch)
            x = mean + (0.5 * log_var).exp() * randn(shape) if t > 0 else mean
        return x


def _randn_fn(device, generator):
    """float32 randn on ``device`` (as upstream, whatever the condition's dtype); with a
    generator, draw on the generator's device and move, so a CPU generator gives the same
    samples whatever device the model is on."""
    if generator is None:
        return lambda shape: torch.randn(shape, device=device)
    return lambda shape: torch.randn(shape, generator=generator, device=generator.device).to(device)
