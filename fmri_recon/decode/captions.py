"""Captions from predicted visual features with GIT (MindEye2's ``GitForCausalLMClipEmb``).

Upstream (docs/upstream.md §3.3): a converter maps the predicted bigG tokens to (B, 257, 1024)
features in the space of git-large-coco's image encoder output; GIT then skips its image
encoder and applies its ``visual_projection`` (Linear + LayerNorm) to those features directly.
Decoding: ``generate(max_length=20)`` (greedy), ``batch_decode(skip_special_tokens=True)``.

Here the stock ``GitForCausalLM`` is used with ``model.git.image_encoder`` replaced by a module
that returns the given features as its ``last_hidden_state``; GIT requires 4-d ``pixel_values``,
so the features travel with a dummy axis: (B, 1, T, D).
"""
from __future__ import annotations

from pathlib import Path



def given_features():
    """A module standing in for GIT's image encoder: (B, 1, T, D) "pixel values" -> last_hidden_state (B, T, D)."""
    from torch import nn
    from transformers.modeling_outputs import BaseModelOutput

    class GivenFeatures(nn.Module):
        def forward(self, pixel_values, interpolate_pos_encoding=False, **kwargs):
            return BaseModelOutput(last_hidden_state=pixel_values[:, 0])

    return GivenFeatures()


class GitCaptioner:
    """A GIT folder (``weights.build_tiny_git`` or a snapshot of microsoft/git-large-coco), loaded."""

    def __init__(self, model, processor, device, dtype):
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.vision = model.git.image_encoder           # kept for ``image_features``
        model.git.image_encoder = given_features()

    @classmethod
    def from_pretrained(cls, path: str | Path, device="cpu", dtype=None) -> "GitCaptioner":
        import torch
        from transformers import AutoProcessor, GitForCausalLM

        dtype = dtype or torch.float32
        model = GitForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        device = torch.device(device)
        return cls(model.to(device).eval(), processor, device, dtype)

    @property
    def feature_shape(self) -> tuple[int, int]:
        """(T, D): GIT's image tokens (patches + CLS) and the width of its image encoder output.

        GIT's attention caches exactly this many image tokens, so T is not free to vary.
        """
        v = self.model.config.vision_config
        return (v.image_size // v.patch_size) ** 2 + 1, v.hidden_size

    def _check(self, features) -> None:
        t, d = self.feature_shape
        if features.ndim != 3 or tuple(features.shape[1:]) != (t, d):
            raise ValueError(f"GIT visual features: expected (B, {t}, {d}), got {tuple(features.shape)}")

    def caption(self, features, *, max_length: int) -> list[str]:
        """One caption per row of ``features`` (B, T, D), greedy, at most ``max_length`` tokens (BOS included)."""
        import torch

        self._check(features)
        pixel_values = features.to(self.device, self.dtype)[:, None]
        with torch.no_grad():
            ids = self.model.generate(pixel_values=pixel_values, max_length=max_length, do_sample=False,
                                      num_beams=1)
        return [c.strip() for c in self.processor.batch_decode(ids, skip_special_tokens=True)]

    def image_features(self, images):
        """GIT's own image-encoder output (B, T, D) float32 on the CPU for images (B, 3, H, W) in [0, 1].

        The images go through GIT's processor (resize, centre crop, CLIP normalisation) exactly
        as a PIL image would after ``ToTensor``; ``do_rescale=False`` as they are in [0, 1].
        """
        import torch

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        pixels = self.processor.image_processor(images=list(images.float().cpu()), do_rescale=False,
                                                return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.vision(pixels.to(self.device, self.dtype)).last_hidden_state.float().cpu()
        self._check(out)
        return out
