"""Training's own validation: retrieval and the blurry latents on the first test images, each
epoch. These are monitors of a running training, not the paper's metrics (fmri_recon.evaluate.metrics):
they share no code with the evaluate stage, so editing a metric reruns evaluate and never makes
a finished training stale."""
from __future__ import annotations

import torch

from fmri_recon.train import losses
from fmri_recon.models import MindEyeModel
from fmri_recon.train.dataset import SubjectData


@torch.no_grad()
def validate(model: MindEyeModel, subj: SubjectData, targets: torch.Tensor, n_images: int, device,
             autocast, latents: torch.Tensor | None = None) -> dict:
    """Retrieval on the first ``n_images`` test images, outputs averaged over the 3 repeats
    (and the L1 and two-way identification of the blurry latents, with the blurry branch)."""
    model.eval()
    n = min(n_images, len(subj.test_images))
    preds, blurs = [], []
    for start in range(0, n, 64):
        with autocast():
            outs = model.over_repeats(subj.test_voxels[start:start + 64].float().to(device))
        reps = [(o.backbone if o.clip_voxels is None else o.clip_voxels).float() for o in outs]
        blur_reps = [o.blur_latent.float() for o in outs if o.blur_latent is not None]
        preds.append(torch.stack(reps).mean(0).cpu())
        if blur_reps:
            blurs.append(torch.stack(blur_reps).mean(0).cpu())
    pred = losses.flat_normalise(torch.cat(preds))
    targ = losses.flat_normalise(targets[subj.test_index[:n]])
    sim = targ @ pred.T                             # sim[i, j] = cos(image_i, brain_j)
    model.train()
    out = {"val_images": n, "val_loss_clip": float(losses.soft_clip_loss(pred, targ, 0.006)),
           "val_image_to_brain": top1(sim), "val_brain_to_image": top1(sim.T)}
    if blurs and latents is not None:   # repeats averaged, as the reconstruct stage does
        pred, true = torch.cat(blurs), latents[subj.test_index[:n]].float()
        out["val_blur_l1"] = float((pred - true).abs().mean())
        # Most of a latent's variance is texture that fMRI does not carry, so L1 moves little;
        # two-way identification (chance 0.5) shows whether the image-specific part is learnt.
        out["val_blur_2way"] = two_way(true, pred)
    return out


def top1(sim: torch.Tensor) -> float:
    """The fraction of rows whose largest entry is on the diagonal (chance 1/n)."""
    return float((sim.argmax(1) == torch.arange(len(sim))).float().mean())


def two_way(true: torch.Tensor, pred: torch.Tensor) -> float:
    """How often a prediction correlates more with its own target than with another one (chance 0.5)."""
    def rows(x):
        x = x.flatten(1).double()
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True)
    r = rows(true) @ rows(pred).T                   # r[i, j] = corr(true_i, pred_j)
    return float((r < r.diag()[None, :]).sum() / (len(r) * (len(r) - 1)))
