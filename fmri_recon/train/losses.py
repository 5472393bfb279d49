"""MindEye2's training losses (docs/upstream.md §2.6): BiMixCo, SoftCLIP, the temperature schedule,
and the blurry branch's soft distillation loss.

All contrastive losses work on flattened, L2-normalised token sets: (B, S*E). Their logits and
losses are computed in fp32 even under autocast (:func:`logits`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


LOSSES = ("total", "prior", "clip", "blur_l1", "blur_cont")   # what a training step reports, summed


def cosine_anneal(start: float, end: float, steps: int) -> list[float]:
    """``end + (start-end)/2 * (1 + cos(pi*i/(steps-1)))``: goes from ``start`` to ``end``."""
    if steps <= 1:
        return [end] * max(steps, 0)
    return [end + (start - end) / 2 * (1 + math.cos(math.pi * i / (steps - 1))) for i in range(steps)]


def mixco(voxels: torch.Tensor, beta: float = 0.15, s_thresh: float = 0.5, generator=None):
    """Mix each selected sample with a random other one (before the ridge), as upstream's BiMixCo.

    Returns (mixed voxels, perm, betas, select): ``v_i <- b_i v_i + (1-b_i) v_perm(i)`` for
    the selected samples (probability ``s_thresh``), with b_i ~ Beta(beta, beta); b = 1 otherwise.
    """
    b = voxels.shape[0]
    perm = torch.randperm(b, generator=generator).to(voxels.device)
    dist = torch.distributions.Beta(torch.tensor(beta), torch.tensor(beta))
    betas = dist.sample((b,)).to(voxels.device, voxels.dtype)
    select = (torch.rand(b, generator=generator) <= s_thresh).to(voxels.device)
    betas = torch.where(select, betas, torch.ones_like(betas))
    shape = (b,) + (1,) * (voxels.dim() - 1)
    mixed = voxels * betas.view(shape) + voxels[perm] * (1 - betas.view(shape))
    return mixed, perm, betas, select


def logits(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """``a @ b.T / temp`` in fp32, autocast or not. With temperatures of .004-.0075 the logits of
    unit vectors reach 130-250, which bf16 stores in steps of about 1 (upstream's fp16 autocast:
    about 0.125), so a bf16 matmul would blur the very differences the loss is about."""
    with torch.autocast(a.device.type, enabled=False):
        return a.float() @ b.float().T / temp


def _soft_ce(z: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return -(probs * F.log_softmax(z, dim=-1)).sum(-1).mean()


def mixco_nce(preds, targs, temp: float, perm, betas, select=None) -> torch.Tensor:
    """Soft-label InfoNCE for mixed samples, both directions (upstream's ``mixco_nce``).

    Label matrix: diagonal ``b_i``; ``P[i, perm(i)] = 1 - b_i`` (written second, so it wins
    when perm(i) = i).
    """
    sim = logits(preds, targs, temp)
    probs = torch.diag(betas.float())
    probs[torch.arange(len(preds), device=preds.device), perm] = 1 - betas.float()
    return (_soft_ce(sim, probs) + _soft_ce(sim.T, probs.T)) / 2


def soft_clip_loss(preds, targs, temp: float) -> torch.Tensor:
    """SoftCLIP: cross-entropy of brain->image logits against the targets' own similarity
    structure, in both directions with the same (symmetric) soft labels."""
    clip_clip = logits(targs, targs, temp)
    brain_clip = logits(preds, targs, temp)
    soft = F.softmax(clip_clip, dim=-1)
    return (_soft_ce(brain_clip, soft) + _soft_ce(brain_clip.T, soft)) / 2


def soft_cont_loss(student, teacher, teacher_aug, temp: float = 0.2) -> torch.Tensor:
    """The blurry branch's distillation loss (upstream's ``soft_cont_loss``) on L2-normalised
    rows: the student's logits against the augmented teacher are pulled towards the teacher's
    own logits against it, in both directions."""
    teacher_teacher_aug = logits(teacher, teacher_aug, temp)
    student_teacher_aug = logits(student, teacher_aug, temp)
    loss1 = _soft_ce(student_teacher_aug, F.softmax(teacher_teacher_aug, dim=-1))
    loss2 = _soft_ce(student_teacher_aug.T, F.softmax(teacher_teacher_aug.T, dim=-1))
    return (loss1 + loss2) / 2


def flat_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.flatten(1).float(), dim=-1)
