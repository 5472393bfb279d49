"""A tiny brain model and learnable fake data, for training tests (unit and multi-process)."""
import numpy as np
import torch

from fmri_recon.models import BrainConfig
from fmri_recon.train import loop
from fmri_recon.train.dataset import SubjectData, TrainData

S, E = 4, 8


def fake_data(voxels=(30,), n_train=48, n_test=10, seed=0) -> TrainData:
    """Voxels that are a fixed linear function of the targets plus noise: learnable."""
    g = torch.Generator().manual_seed(seed)
    n_img = n_train + n_test
    targets = torch.randn(n_img, S, E, generator=g)
    subjects = []
    for k, v in enumerate(voxels):
        w = torch.randn(S * E, v, generator=g) / (S * E) ** 0.5
        enc = lambda idx: (targets[idx].flatten(1) @ w + 0.3 * torch.randn(len(idx), v, generator=g)).half()  # noqa
        train_idx = torch.arange(n_test, n_img)
        test_idx = torch.arange(n_test)
        subjects.append(SubjectData(
            subject=k + 1, voxels=enc(train_idx), target_index=train_idx, image_ids=train_idx.numpy(),
            test_voxels=torch.stack([enc(test_idx) for _ in range(3)], 1), test_index=test_idx,
            test_images=test_idx.numpy()))
    return TrainData(subjects, targets.half(), np.arange(n_img))


def tiny_cfg(voxels=(30,), **kw) -> BrainConfig:
    return BrainConfig(num_voxels=list(voxels), hidden_dim=16, n_blocks=1, clip_seq_dim=S, clip_emb_dim=E,
                       prior_depth=1, prior_dim_head=8, **kw)


def tiny_tc(**kw) -> loop.TrainConfig:
    base = dict(num_epochs=4, batch_size=8, max_lr=3e-3, precision="fp32", ckpt_interval=2, val_images=10,
                device="cpu", deepspeed_offload=False)
    return loop.TrainConfig(**{**base, **kw})
