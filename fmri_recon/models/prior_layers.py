"""The diffusion prior's layers (fmri_recon.models.prior): dalle2-pytorch's causal transformer as
MindEye2 configures it, rotary embeddings, relative position bias, SwiGLU feed-forward.

Module names and nesting keep ``state_dict()`` keys and shapes exactly upstream's (see prior.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


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


def keep_mask(batch: int, keep_prob: float, device) -> torch.Tensor:
    """(batch, 1, 1) bool: True where a sample keeps its condition."""
    if keep_prob >= 1:
        return torch.ones(batch, 1, 1, dtype=torch.bool, device=device)
    if keep_prob <= 0:
        return torch.zeros(batch, 1, 1, dtype=torch.bool, device=device)
    return torch.rand(batch, 1, 1, device=device) < keep_prob
