"""The training settings of one run (an experiment's TrainConfig fields are config keys: the
schema's ``model`` block holds their defaults, fmri_recon.experiment routes them here)."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    num_epochs: int = 150
    batch_size: int = 24            # global batch (split evenly over subjects)
    grad_accum: int = 1             # micro-batches per optimizer step
    max_lr: float = 3e-4
    lr_scheduler: str = "cycle"     # cycle (OneCycle) | linear
    mixup_pct: float = 0.33
    clip_scale: float = 1.0
    prior_scale: float = 30.0
    blur_scale: float = 0.5
    # Upstream mixes the latent targets during mixup only *after* computing the L1 loss, so its
    # loss uses unmixed targets (kept: False); True mixes them like the voxels first.
    blur_mix_targets: bool = False
    ckpt_interval: int = 5
    seed: int = 42
    precision: str = "bf16"         # fp32 | bf16 | fp16
    deepspeed_offload: bool = False  # DeepSpeed ZeRO-2 + CPU optimizer offload (bf16 weights, no autocast)
    num_processes: int = 1          # ranks (GPUs) sharing each global batch (fmri_recon.train.distributed)
    activation_checkpointing: bool = True   # recompute the prior's layers in backward (same gradients)
    val_images: int = 300           # first N unique test images, as upstream's validation
    device: str = "auto"
    wandb: bool = False
    wandb_project: str = "fmri-reconstruction"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:  # loud: a misspelt setting would otherwise train with the default
            raise ValueError(f"TrainConfig: unknown fields {sorted(unknown)}")
        return cls(**d)
