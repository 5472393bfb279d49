r"""Brain model: per-subject ridge -> shared backbone -> diffusion prior (MindEye2, docs/upstream.md §2.2-2.5).

Written from docs/upstream.md, not from upstream code.  ``MindEyeModel``'s
``state_dict()`` keys and shapes are exactly upstream's ``model_state_dict`` (Appendix A), so
released ``last.pth`` checkpoints load with ``strict=True`` when ``backbone="upstream_mixer"``.

Shapes (B batch, V_s voxels of subject s, h hidden_dim, S/E CLIP tokens/width):

    voxels (B,1,V_s) --ridge[s]--> (B,1,h) --BrainNetwork--> backbone    (B,S,E)  -> prior
                                                         \-> clip_voxels (B,S,E)  -> contrastive loss
                                                         \-> blur_latent (B,4,28,28), blur_aux (B,49,512)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn

from fmri_recon.models.prior import BrainDiffusionPrior, PriorConfig

BACKBONES = ("upstream_mixer", "residual_mlp")
# Low-level ("blurry") branch: h -> 64 maps of 7x7 -> VAE latent (4,28,28) and 49 aux tokens.
BLUR_MAPS, BLUR_HW, BLUR_AUX_DIM = 64, 7, 512


class BrainOutput(NamedTuple):
    """What the backbone predicts for a batch (a tuple in upstream's order, fields by name)."""
    backbone: torch.Tensor                  # (B,S,E) the prior's input
    clip_voxels: torch.Tensor | None        # (B,S,E) retrieval head; None when clip_scale == 0
    blur: tuple                             # (blur_latent (B,4,28,28), blur_aux (B,49,512)) or (None, None)

    @property
    def blur_latent(self):
        return self.blur[0]


@dataclass
class BrainConfig:
    num_voxels: list[int]              # one per subject, in ridge order (subj01: 15724)
    hidden_dim: int = 1024
    n_blocks: int = 4
    clip_seq_dim: int = 256            # S
    clip_emb_dim: int = 1664           # E
    blurry_recon: bool = False
    backbone: str = "upstream_mixer"   # or "residual_mlp" (blocks that actually work)
    drop: float = 0.15
    clip_scale: float = 1.0            # 0: clip_proj is not run (clip_voxels is None)
    # Deliberate deviation (config key ``clip_exclude_mean``): remove the direction of the train
    # targets' mean from clip_voxels. See BrainNetwork.exclude_mean for why.
    clip_exclude_mean: bool = False    # False: exactly upstream's model (released layout)
    use_prior: bool = True
    prior_depth: int = 6
    prior_dim_head: int = 52
    prior_heads: int | None = None     # None: clip_emb_dim // prior_dim_head, as upstream
    prior_timesteps: int = 100
    prior_cond_drop_prob: float = 0.2

    def __post_init__(self):
        self.num_voxels = [int(v) for v in self.num_voxels]
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r}: expected one of {BACKBONES}")
        if self.use_prior and not (self.prior_heads or self.clip_emb_dim // self.prior_dim_head):
            raise ValueError(f"prior_dim_head {self.prior_dim_head} is wider than the CLIP tokens ({self.clip_emb_dim}): "
                             "the prior would have no attention head; lower it or set prior_heads")

    def prior_config(self) -> PriorConfig:
        heads = self.prior_heads or self.clip_emb_dim // self.prior_dim_head
        return PriorConfig(dim=self.clip_emb_dim, depth=self.prior_depth, dim_head=self.prior_dim_head,
                           heads=heads, num_tokens=self.clip_seq_dim, timesteps=self.prior_timesteps,
                           cond_drop_prob=self.prior_cond_drop_prob)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:  # loud: a silently ignored field is how checkpoints get misread
            raise ValueError(f"BrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)


class RidgeRegression(nn.Module):
    """One Linear(V_s, h) per subject ("shared-subject functional alignment").  The ridge
    penalty is just the optimiser's weight decay."""

    def __init__(self, num_voxels: list[int], hidden_dim: int):
        super().__init__()
        self.linears = nn.ModuleList([nn.Linear(v, hidden_dim) for v in num_voxels])

    def forward(self, x, subj_idx: int):
        """x (B,1,V_s) -> (B,1,h)."""
        return self.linears[subj_idx](x[:, 0]).unsqueeze(1)


def _mlp_block(dim: int, drop: float) -> nn.Sequential:
    """LayerNorm -> [Linear -> GELU -> Dropout -> Linear]; keys .0.*, .1.0.*, .1.3.*"""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(drop), nn.Linear(dim, dim)),
    )


def _clip_proj(dim: int) -> nn.Sequential:
    """Token-wise retrieval head: 3 x (LayerNorm -> GELU -> Linear)."""
    layers = []
    for _ in range(3):
        layers += [nn.LayerNorm(dim), nn.GELU(), nn.Linear(dim, dim)]
    return nn.Sequential(*layers)


def _make_decoder():
    """diffusers VAE-style Decoder: 64x7x7 maps -> 4x28x28 latent (two 2x upsamplers)."""
    try:
        from diffusers.models.autoencoders.vae import Decoder
    except ImportError:  # diffusers < 0.26
        from diffusers.models.vae import Decoder
    return Decoder(in_channels=BLUR_MAPS, out_channels=4, up_block_types=["UpDecoderBlock2D"] * 3,
                   block_out_channels=[32, 64, 128], layers_per_block=1)


class BrainNetwork(nn.Module):
    """Shared backbone: (B,1,h) ridge output -> CLIP-token predictions (+ blurry branch).

    ``backbone="upstream_mixer"`` reproduces upstream's MLP-mixer *exactly*, including its
    seq_len=1 bug (spec 2.4 QUIRK): ``mixer_blocks2`` LayerNorm over a size-1 axis returns
    only its bias, and the residual bookkeeping never feeds ``mixer_blocks1``'s output
    forward.  So THE UPSTREAM VARIANT'S BLOCKS HAVE NO EFFECT: in eval mode the mixer output
    is input + a scalar constant, and ``mixer_blocks1`` gets zero gradient (in train mode
    dropout in ``mixer_blocks2`` adds random per-element constants).  The model is in effect
    ridge -> +c -> backbone_linear.  Use it to load released checkpoints and match numbers.

    ``backbone="residual_mlp"`` is the residual MLP the paper describes: ``blocks[i]`` with
    x = x + block(x); no ``mixer_blocks*`` keys.  All other names are shared.
    """

    def __init__(self, cfg: BrainConfig):
        super().__init__()
        h, S, E = cfg.hidden_dim, cfg.clip_seq_dim, cfg.clip_emb_dim
        self.cfg = cfg
        if cfg.backbone == "upstream_mixer":
            self.mixer_blocks1 = nn.ModuleList([_mlp_block(h, cfg.drop) for _ in range(cfg.n_blocks)])
            self.mixer_blocks2 = nn.ModuleList([_mlp_block(1, cfg.drop) for _ in range(cfg.n_blocks)])
        else:
            self.blocks = nn.ModuleList([_mlp_block(h, cfg.drop) for _ in range(cfg.n_blocks)])
        self.backbone_linear = nn.Linear(h, S * E)
        self.clip_proj = _clip_proj(E)   # built even if clip_scale == 0, so checkpoints keep their keys
        if cfg.clip_exclude_mean:        # unit vector (S, E); set from the train targets by set_clip_mean
            self.register_buffer("clip_mean", torch.zeros(S, E))
        if cfg.blurry_recon:
            self.blin1 = nn.Linear(h, BLUR_MAPS * BLUR_HW * BLUR_HW)
            self.bdropout = nn.Dropout(0.3)
            self.bnorm = nn.GroupNorm(1, BLUR_MAPS)
            self.bupsampler = _make_decoder()
            self.b_maps_projector = nn.Sequential(
                nn.Conv2d(BLUR_MAPS, BLUR_AUX_DIM, 1, bias=False), nn.GroupNorm(1, BLUR_AUX_DIM), nn.ReLU(True),
                nn.Conv2d(BLUR_AUX_DIM, BLUR_AUX_DIM, 1, bias=False), nn.GroupNorm(1, BLUR_AUX_DIM), nn.ReLU(True),
                nn.Conv2d(BLUR_AUX_DIM, BLUR_AUX_DIM, 1, bias=True),
            )

    def mixer(self, x):
        """(B,1,h) -> (B,1,h): the residual blocks."""
        if self.cfg.backbone == "residual_mlp":
            for block in self.blocks:
                x = x + block(x)
            return x
        # upstream mixer, verbatim in effect: token-mixing blocks act on the seq axis (size 1)
        r1, r2 = x, x.transpose(1, 2)
        for b1, b2 in zip(self.mixer_blocks1, self.mixer_blocks2):
            x = b1(x) + r1
            r1 = x
            x = b2(x.transpose(1, 2)) + r2   # b2(.) is a constant: r2 never sees b1's output
            r2 = x
            x = x.transpose(1, 2)
        return x

    def set_clip_mean(self, targets: torch.Tensor) -> None:
        """Record the mean direction of the train targets (N, S, E) for ``exclude_mean``."""
        mean = targets.float().mean(0)
        self.clip_mean.copy_(mean / mean.norm())

    def exclude_mean(self, clip_voxels):
        """clip_voxels without their component along the train targets' mean direction.

        Why: CLIP token targets share one dominant direction (in the demo's space the targets'
        cosine to their mean is 0.95), so the cosine of a target with a prediction contains
        ``a * cos(prediction, mean)``, the same for every image. Upstream averages the outputs
        of an image's three repeats before retrieval; averaging cancels part of the prediction's
        noise but not its shared part, so well-averaged predictions lean towards the mean and
        become hubs that every image retrieves (image->brain fell to 0.08 in the demo while
        brain->image stayed at 0.50). Without that component, retrieval compares only the
        image-specific parts; the contrastive losses never needed it."""
        flat = clip_voxels.flatten(1).float()
        u = self.clip_mean.flatten().float()
        if not u.any():
            raise RuntimeError("clip_exclude_mean: the train targets' mean was never set (set_clip_mean)")
        return (flat - (flat @ u)[:, None] * u).view_as(clip_voxels).to(clip_voxels.dtype)

    def forward(self, x):
        """x (B,1,h) -> (backbone (B,S,E), clip_voxels (B,S,E) or None, (blur_latent, blur_aux)).

        clip_voxels is None when clip_scale == 0; the blur pair is (B,4,28,28), (B,49,512)
        with blurry_recon, else (None, None)."""
        B = x.shape[0]
        x = self.mixer(x).reshape(B, -1)
        backbone = self.backbone_linear(x).reshape(B, self.cfg.clip_seq_dim, self.cfg.clip_emb_dim)
        clip_voxels = self.clip_proj(backbone) if self.cfg.clip_scale > 0 else None
        if clip_voxels is not None and self.cfg.clip_exclude_mean:
            clip_voxels = self.exclude_mean(clip_voxels)
        blur = (None, None)
        if self.cfg.blurry_recon:
            maps = self.bdropout(self.blin1(x)).reshape(B, BLUR_MAPS, BLUR_HW, BLUR_HW)
            maps = self.bnorm(maps)
            aux = self.b_maps_projector(maps).flatten(2).transpose(1, 2)   # (B,49,512)
            blur = (self.bupsampler(maps), aux)
        return BrainOutput(backbone, clip_voxels, blur)


class MindEyeModel(nn.Module):
    """Container with upstream's top-level names: ``ridge``, ``backbone``, ``diffusion_prior``.

    The prior (if cfg.use_prior) is not run by ``forward``; training calls
    ``model.diffusion_prior(text_embed=backbone, image_embed=clip_target)`` for (loss, pred)
    and inference ``model.diffusion_prior.p_sample_loop(backbone.shape, backbone)``."""

    def __init__(self, cfg: BrainConfig):
        super().__init__()
        self.cfg = cfg
        self.ridge = RidgeRegression(cfg.num_voxels, cfg.hidden_dim)
        self.backbone = BrainNetwork(cfg)
        self.diffusion_prior = BrainDiffusionPrior(cfg.prior_config()) if cfg.use_prior else None

    def over_repeats(self, voxels, subj_idx=0) -> list[BrainOutput]:
        """The output on each repeat of test voxels (n, repeats, V): upstream runs every repeat and
        averages the outputs, not the voxels (docs/upstream.md §1.4)."""
        return [self(voxels[:, r][:, None], subj_idx) for r in range(voxels.shape[1])]

    def forward(self, voxels, subj_idx=0):
        """voxels (B,1,V_s) with an int subj_idx, or lists of both (multi-subject: each batch
        through its own ridge, concatenated on the batch axis before the shared backbone).
        Returns BrainNetwork's (backbone, clip_voxels, (blur_latent, blur_aux))."""
        dtype = self.ridge.linears[0].weight.dtype    # bf16 under DeepSpeed, which does not autocast
        if isinstance(subj_idx, int):
            hidden = self.ridge(voxels.to(dtype), subj_idx)
        else:
            hidden = torch.cat([self.ridge(v.to(dtype), s) for v, s in zip(voxels, subj_idx)], dim=0)
        return self.backbone(hidden)


def parameter_counts(model: MindEyeModel) -> dict[str, int]:
    """Trainable parameters per component (ridge, backbone, prior, total), plus ``frozen``:
    the non-trainable parameters (the prior's shared rotary freqs, 16 numbers).  Upstream's
    printed counts include the frozen ones, e.g. prior 259,865,200 + 16 = 259,865,216."""
    def count(module, trainable=True):
        if module is None:
            return 0
        return sum(p.numel() for p in module.parameters() if p.requires_grad == trainable)

    counts = {name: count(getattr(model, attr))
              for name, attr in (("ridge", "ridge"), ("backbone", "backbone"), ("prior", "diffusion_prior"))}
    counts["total"] = count(model)
    counts["frozen"] = count(model, trainable=False)
    return counts
