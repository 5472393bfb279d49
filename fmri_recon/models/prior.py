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


# ----------------------------------------------------------------------------- building blocks

class LayerNorm(nn.Module):
    """dalle2-style LayerNorm: a gain ``g`` and no bias; a larger eps in half precision.

    ``stable=True`` first divides each row by its max, so fp16 activations cannot overflow
    in the variance (used once, before the output projection)."""

    def __init__(self, dim: int, eps: float = 1e-5, fp16_eps: float = 1e-3, stable: bool = False):
        super().__init__()
        self.eps, self.fp16_eps, self.stable = eps, fp16_eps, stable
        self.g = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        eps = self.eps if x.dtype == torch.float32 else self.fp16_eps
        if self.stable:
            x = x / x.amax(dim=-1, keepdim=True).detach()
        var = torch.var(x, dim=-1, unbiased=False, keepdim=True)
        mean = x.mean(dim=-1, keepdim=True)
        return (x - mean) * (var + eps).rsqrt() * self.g


class SinusoidalPosEmb(nn.Module):
    """Continuous sinusoidal embedding of a (float-cast) timestep: [sin | cos], dim wide."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimeMLP(nn.Module):
    """dalle2 ``MLP(dim_in, dim_out)``: expansion 2, two hidden SiLU layers.  ``net`` is its
    Sequential, so the weights are named ``net.0.0``, ``net.1.0``, ``net.2``."""

    def __init__(self, dim_in: int, dim_out: int, expansion: int = 2):
        super().__init__()
        hidden = dim_in * expansion
        self.net = nn.Sequential(
            nn.Sequential(nn.Linear(dim_in, hidden), nn.SiLU()),
            nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU()),
            nn.Linear(hidden, dim_out),
        )

    def forward(self, x):
        return self.net(x.to(self.net[0][0].weight.dtype))  # the sinusoid comes in float32


def _rotate_half(x):
    # Rotary pairs are *interleaved* (dims 0-1, 2-3, ...), as in rotary-embedding-torch.
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding on the first ``dim`` features of q or k (rest untouched).

    ``freqs`` is a frozen Parameter (not a buffer) because upstream's is: the released
    parameter count (prior 259,865,216) includes its 16 numbers.  One instance is shared by
    every attention layer, so ``state_dict()`` stores it under each layer."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def rotate(self, t):
        """t: (..., n, d); position i of the n rotates by i * freqs."""
        pos = torch.arange(t.shape[-2], device=t.device, dtype=torch.float32)
        angles = torch.outer(pos, self.freqs.float()).repeat_interleave(2, dim=-1)  # (n, rot)
        rot = angles.shape[-1]
        t_rot, t_pass = t[..., :rot].float(), t[..., rot:]
        t_rot = t_rot * angles.cos() + _rotate_half(t_rot) * angles.sin()
        return torch.cat((t_rot.to(t.dtype), t_pass), dim=-1)


class RelPosBias(nn.Module):
    """T5 relative position bias, one scalar per head: 32 buckets, max distance 128.

    The bucket depends only on n = max(i - j, 0) (query i, key j), so every "future" key
    shares bucket 0 - dalle2 wrote it for causal attention and MindEye uses it non-causally."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def bucket(self, rel_pos):
        n = (-rel_pos).clamp(min=0)
        max_exact = self.num_buckets // 2
        # exact buckets below max_exact, log-spaced buckets up to max_distance, then saturate
        log_ratio = torch.log(n.float().clamp(min=1) / max_exact) / math.log(self.max_distance / max_exact)
        large = (max_exact + (log_ratio * (self.num_buckets - max_exact)).long()).clamp(max=self.num_buckets - 1)
        return torch.where(n < max_exact, n, large)

    def forward(self, i: int, j: int, device=None):
        """(heads, i, j) bias for i queries and j keys, both numbered from 0."""
        rel = torch.arange(j, device=device)[None, :] - torch.arange(i, device=device)[:, None]
        return self.relative_attention_bias(self.bucket(rel)).permute(2, 0, 1)


class Attention(nn.Module):
    """Pre-norm multi-query cosine-sim attention with a learned null key/value.

    Multi-query: all heads share one key and one value (``to_kv`` is 2*dim_head wide).
    Cosine sim: q and k are l2-normalised and each multiplied by sqrt(16), so logits are
    16*cos + bias.  The null key/value is prepended after rotary, so it carries no position;
    for the bias it is key number 0 (see PriorTransformer)."""

    def __init__(self, dim: int, dim_head: int, heads: int, rotary_emb: RotaryEmbedding,
                 cosine_sim_scale: float = 16.0):
        super().__init__()
        self.heads, self.dim_head, self.cosine_sim_scale = heads, dim_head, cosine_sim_scale
        self.norm = LayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, heads * dim_head, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim_head, bias=False)
        self.rotary_emb = rotary_emb
        self.to_out = nn.Sequential(nn.Linear(heads * dim_head, dim, bias=False), LayerNorm(dim))

    def forward(self, x, attn_bias):
        b, n, _ = x.shape
        x = self.norm(x)
        q = self.to_q(x).view(b, n, self.heads, self.dim_head).transpose(1, 2)   # (b, h, n, d)
        k, v = self.to_kv(x).chunk(2, dim=-1)                                      # (b, n, d) each
        q, k = self.rotary_emb.rotate(q), self.rotary_emb.rotate(k)
        null_k, null_v = (t.to(k.dtype).expand(b, 1, -1) for t in self.null_kv.unbind(0))
        k, v = torch.cat((null_k, k), dim=1), torch.cat((null_v, v), dim=1)        # (b, n+1, d)

        s = math.sqrt(self.cosine_sim_scale)
        q, k = F.normalize(q, dim=-1) * s, F.normalize(k, dim=-1) * s
        # SDPA with scale=1 and an additive float mask is exactly softmax(q k^T + bias) v;
        # the shared k/v are broadcast over heads without a copy.
        k, v = (t[:, None].expand(-1, self.heads, -1, -1) for t in (k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias.to(q.dtype), scale=1.0)
        return self.to_out(out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head))


class SwiGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return x * F.silu(gate)


def FeedForward(dim: int, mult: int = 4, dropout: float = 0.0) -> nn.Sequential:
    """LayerNorm -> Linear(dim, 2*mult*dim) -> SwiGLU -> (norm slot) -> Dropout -> Linear.

    Index 3 is dalle2's optional post-activation norm, off here; the Identity keeps the
    output Linear at index 5 as in upstream checkpoints."""
    inner = dim * mult
    return nn.Sequential(
        LayerNorm(dim),
        nn.Linear(dim, 2 * inner, bias=False),
        SwiGLU(),
        nn.Identity(),
        nn.Dropout(dropout),
        nn.Linear(inner, dim, bias=False),
    )


class PriorTransformer(nn.Module):
    """dalle2's CausalTransformer as MindEye runs it: non-causal, T5 bias, final stable norm."""

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int):
        super().__init__()
        # Recompute each layer's activations in the backward pass instead of keeping them
        # (training only; the gradients are the same). Set by the train stage.
        self.activation_checkpointing = False
        self.rel_pos_bias = RelPosBias(heads)
        rotary_emb = RotaryEmbedding(min(32, dim_head))  # one instance shared by all layers
        self.layers = nn.ModuleList([
            nn.ModuleList([Attention(dim, dim_head, heads, rotary_emb), FeedForward(dim)])
            for _ in range(depth)
        ])
        self.norm = LayerNorm(dim, stable=True)
        self.project_out = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        n = x.shape[1]
        # n queries against n+1 keys: the null key is key 0, so real key j sits at j+1 (upstream).
        attn_bias = self.rel_pos_bias(n, n + 1, device=x.device)
        for attn, ff in self.layers:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(_layer, attn, ff, x, attn_bias, use_reentrant=False)
            else:
                x = _layer(attn, ff, x, attn_bias)
        return self.project_out(self.norm(x))


def _layer(attn, ff, x, attn_bias):
    x = attn(x, attn_bias) + x
    return ff(x) + x


def _keep_mask(batch: int, keep_prob: float, device) -> torch.Tensor:
    """(batch, 1, 1) bool: True where a sample keeps its condition."""
    if keep_prob >= 1:
        return torch.ones(batch, 1, 1, dtype=torch.bool, device=device)
    if keep_prob <= 0:
        return torch.zeros(batch, 1, 1, dtype=torch.bool, device=device)
    return torch.rand(batch, 1, 1, device=device) < keep_prob


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
        brain_embed = torch.where(_keep_mask(b, 1 - brain_cond_drop_prob, device),
                                  brain_embed.to(dtype), self.null_brain_embeds)
        image_embed = torch.where(_keep_mask(b, 1 - image_cond_drop_prob, device),
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
