"""Image resizing as upstream does it, in one place for every stage.

Upstream resizes image tensors with torchvision's ``transforms.Resize`` under torchvision 0.16,
whose tensor default is bilinear *without* antialiasing: reconstructions 768 -> 256 before they
are saved, refined images 768 -> 256, and every resize of the final evaluation. torchvision
0.17 and later antialias by default, so it is switched off explicitly here.
"""
from __future__ import annotations

import torch

OUTPUT_SIZE = 256      # the size of every saved reconstruction and of the evaluation (upstream)
# OpenAI CLIP's input normalisation (open_clip's OPENAI_DATASET_MEAN/STD): the targets' encoders and
# the CLIP metric both use it.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resize(x: torch.Tensor, size: int | list[int]) -> torch.Tensor:
    """torchvision tensor ``Resize(size)`` as in torchvision 0.16: bilinear, no antialiasing.
    An int resizes the short side; ``[h, w]`` gives exactly that size."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    return TF.resize(x, size, interpolation=InterpolationMode.BILINEAR, antialias=False)


def to_output_size(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3, 256, 256) float32 on the CPU, clamped to [0, 1]."""
    return resize(images.float().cpu(), [OUTPUT_SIZE, OUTPUT_SIZE]).clamp(0, 1)
