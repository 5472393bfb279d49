"""The blurry (low-level) branch's frozen models: the SD image-variations VAE and the VICRegL
ConvNeXt-XL teacher, their targets cache, the teacher's augmentations, and the blurry decode.

Facts: docs/upstream.md §2.6 "Low-level" and §3.5.

- VAE: a diffusers ``AutoencoderKL`` whose state dict upstream ships as ``sd_image_var_autoenc.pth``.
  Target latents are ``encode(2*img-1).latent_dist.mode() * 0.18215``: (4,28,28) for 224² images.
- Teacher: ConvNeXt-XL (timm's implementation, loaded from the FB/VICRegL key layout through timm's
  own checkpoint filter), its 7x7 map LayerNormed per location, then VICRegL's ``maps_projector``
  MLP 2048-512-512-512 -> (B,49,512). Upstream loads this checkpoint with ``strict=False`` inside a
  bare ``try/except``, so a wrong file silently gives a random teacher; here every weight the
  teacher needs must be in the file (missing keys raise), and keys it does not use are logged.
- Both are deterministic on unaugmented images, so the ``lowlevel_targets`` stage computes the
  latents and the teacher's features once per image (upstream recomputes them every step). Only
  the teacher on augmented images (``blur_augs``, random per step) runs inside training.

``random`` weights build tiny models of the same classes (TINY_*), saved in the same file formats,
so the demo and the tests go through exactly the loaders of a real run.

Cache layout (HDF5, written by ``clip_targets.write_cache``): ``image_ids`` (N,) sorted; ``latents``
(N,4,28,28) float16; ``teacher`` (N,49,512) float16.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fmri_recon import helpers
from fmri_recon.data import released

log = logging.getLogger(__name__)

VAE_SCALE = 0.18215                       # SD 1.x latent scale (upstream's blurry latents)
IMAGE_SIZE = 224                          # upstream encodes the 224² NSD images
LATENT_SHAPE = (4, 28, 28)
TEACHER_TOKENS, TEACHER_DIM = 49, 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.228, 0.224, 0.225)      # QUIRK kept: upstream's 0.228 (ImageNet's is 0.229)

# Upstream's AutoencoderKL arguments (Train cell 16) and a tiny one of the same class: still
# 3 downsamples (latents 28x28 from 224²), a few channels (norm groups must divide them).
SD_IMAGE_VAR_VAE = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        block_out_channels=[128, 256, 512, 512], layers_per_block=2, sample_size=256)
# The same VAE, tiny (the unCLIP decoder's tiny SD-XL VAE is another model: weights.TINY_SDXL_VAE).
TINY_VAE = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                block_out_channels=[16, 16, 32, 32], layers_per_block=1, norm_num_groups=8, sample_size=256)
CONVNEXT_XLARGE = dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048))
TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))


# --------------------------------------------------------------------------- VAE
def build_vae(tiny: bool = False):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(TINY_VAE if tiny else SD_IMAGE_VAR_VAE))


def load_vae(path: str | Path, tiny: bool = False, device="cpu", dtype=torch.float32):
    """The VAE with the state dict ``path`` (upstream's ``sd_image_var_autoenc.pth``) loaded strictly."""
    vae = build_vae(tiny)
    state = released.tensors(released.load(path), path, "the file")
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a state dict of the {'tiny' if tiny else 'SD image-variations'} "
                         f"AutoencoderKL: {str(e)[:500]}") from e
    vae = vae.to(device)
    if dtype != torch.float32:      # diffusers warns on a no-op cast
        vae = vae.to(dtype)
    return vae.eval().requires_grad_(False)


def encode_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """Images (B,3,224,224) in [0,1] -> scaled latent modes (B,4,28,28)."""
    param = next(vae.parameters())
    x = (2 * images.to(param.device, param.dtype) - 1)
    return vae.encode(x).latent_dist.mode() * VAE_SCALE


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B,4,28,28) -> images (B,3,224,224) in [0,1] (upstream's blurry decode)."""
    param = next(vae.parameters())
    out = vae.decode(latents.to(param.device, param.dtype) / VAE_SCALE).sample
    return (out.float() / 2 + 0.5).clamp(0, 1)


# --------------------------------------------------------------------------- teacher
class ConvnextTeacher(nn.Module):
    """ConvNeXt backbone + VICRegL ``maps_projector``: normalised images -> (B, 49, 512) tokens."""

    def __init__(self, depths, dims):
        super().__init__()
        from timm.models.convnext import ConvNeXt

        # ls_init_value=None: no layer scale, as upstream builds it (layer_scale_init_value=0).
        self.backbone = ConvNeXt(depths=tuple(depths), dims=tuple(dims), num_classes=0, ls_init_value=None)
        d = dims[-1]
        self.maps_projector = nn.Sequential(
            nn.Linear(d, 512), nn.LayerNorm(512), nn.ReLU(True),
            nn.Linear(512, 512), nn.LayerNorm(512), nn.ReLU(True),
            nn.Linear(512, TEACHER_DIM, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.head.norm(self.backbone.forward_features(x))   # LayerNorm per location
        return self.maps_projector(maps.flatten(2).transpose(1, 2))


def build_teacher(tiny: bool = False) -> ConvnextTeacher:
    return ConvnextTeacher(**(TINY_CONVNEXT if tiny else CONVNEXT_XLARGE))


def _timm_to_fb(key: str) -> str:
    """timm ConvNeXt key -> the FB/VICRegL layout (the inverse of timm's checkpoint filter)."""
    import re

    key = key.replace("stem.", "downsample_layers.0.").replace("conv_dw", "dwconv").replace("mlp.fc", "pwconv")
    key = re.sub(r"stages\.(\d+)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"stages\.(\d+)\.blocks\.", r"stages.\1.", key)
    return key.replace("head.norm.", "norm.")


def save_teacher(teacher: ConvnextTeacher, path: str | Path) -> None:
    """Write ``teacher`` as VICRegL checkpoints are: ``{'model': {'module.backbone.<FB key>': ...}}``."""
    state = {f"module.backbone.{_timm_to_fb(k)}": v for k, v in teacher.backbone.state_dict().items()}
    state.update({f"module.maps_projector.{k}": v for k, v in teacher.maps_projector.state_dict().items()})
    with helpers.atomic_output(path) as tmp:
        torch.save({"model": state}, tmp)


def load_teacher(path: str | Path, tiny: bool = False, device="cpu", dtype=torch.float32) -> ConvnextTeacher:
    """The teacher from a VICRegL checkpoint; every weight it needs must be in the file."""
    from timm.models.convnext import checkpoint_filter_fn

    teacher = build_teacher(tiny)
    ckpt = released.load(path)     # VICRegL's full checkpoint: only its 'model' is read
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: expected a VICRegL checkpoint, a dict with key 'model'")
    model = released.tensors(ckpt["model"], path, "model")
    state = {k.replace("module.", ""): v for k, v in model.items()}
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    backbone = checkpoint_filter_fn(backbone, teacher.backbone)
    projector = {k[len("maps_projector."):]: v for k, v in state.items() if k.startswith("maps_projector.")}
    unused = [k for k in state if not k.startswith(("backbone.", "maps_projector."))]
    for part, sd, name in ((teacher.backbone, backbone, "backbone"), (teacher.maps_projector, projector,
                                                                       "maps_projector")):
        missing, unexpected = part.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"{path}: the teacher's {name} lacks {len(missing)} weights, e.g. {missing[:5]}")
        unused += [f"{name}.{k}" for k in unexpected]
    if unused:
        log.warning("%s: %d keys the teacher does not use (as upstream), e.g. %s", path, len(unused), unused[:5])
    return teacher.to(device=device, dtype=dtype).eval().requires_grad_(False)


def normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images - mean) / std


def blur_augs():
    """Upstream's teacher augmentations (kornia; each image gets its own random parameters)."""
    import kornia.augmentation as K
    from kornia.augmentation.container import AugmentationSequential

    return AugmentationSequential(
        K.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, p=0.8),
        K.RandomGrayscale(p=0.1),
        K.RandomSolarize(p=0.1),
        K.RandomResizedCrop((IMAGE_SIZE, IMAGE_SIZE), scale=(0.9, 0.9), ratio=(1, 1), p=1.0),
        data_keys=["input"])


# --------------------------------------------------------------------------- random weights
def save_random(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Tiny random VAE and teacher in upstream's file formats: ``vae.pth``, ``teacher.pth``."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    vae = build_vae(tiny=True)
    paths = {"vae": out_dir / "vae.pth", "teacher": out_dir / "teacher.pth"}
    with helpers.atomic_output(paths["vae"]) as tmp:
        torch.save(vae.state_dict(), tmp)
    save_teacher(build_teacher(tiny=True), paths["teacher"])
    return paths


# --------------------------------------------------------------------------- targets cache
def build_cache(image_ids: np.ndarray, data_dir: str | Path, vae_path, teacher_path, out_path, *,
                tiny_vae: bool = False, tiny_teacher: bool = False, device="cpu", dtype=torch.float32,
                batch_size: int = 32) -> dict:
    """VAE latents and teacher features of every image, computed once (layout: module docstring)."""
    from fmri_recon.targets.clip_targets import write_cache

    vae = load_vae(vae_path, tiny_vae, device, dtype)
    teacher = load_teacher(teacher_path, tiny_teacher, device, dtype)

    def encode(images):
        images = images.to(device=device, dtype=dtype)
        if tuple(images.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{data_dir}: images are {tuple(images.shape[-2:])}, the blurry branch expects "
                             f"{IMAGE_SIZE}x{IMAGE_SIZE} (coco_images_224_float16.hdf5)")
        return {"latents": encode_latents(vae, images), "teacher": teacher(normalise(images))}

    attrs = {"vae": Path(vae_path).name, "teacher": Path(teacher_path).name, "tiny_vae": tiny_vae,
             "tiny_teacher": tiny_teacher,
             "vae_scale": VAE_SCALE}
    shapes = {"latents": LATENT_SHAPE, "teacher": (TEACHER_TOKENS, TEACHER_DIM)}
    n = write_cache(image_ids, data_dir, out_path, encode, shapes, attrs, batch_size, "low-level targets")
    return {**attrs, "images": n}
