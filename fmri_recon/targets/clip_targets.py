"""CLIP image-token targets: encode every image a run uses once, cache them in HDF5.

Training and evaluation read targets from this cache and never run CLIP. The tokens
are MindEye2's: the patch tokens of an open_clip vision tower (CLS dropped,
unprojected), from images that go through upstream's preprocessing quirk
(``zero_one_quirk``): images in [0,1] are mapped by ``(x+1)/2`` as if they were in
[-1,1], so the encoder sees [0.5,1].

Token space (``token_norm``): upstream's targets are sgm's ``FrozenOpenCLIPImageEmbedder``,
i.e. ``visual(x)`` with ``output_tokens=True``. open_clip 2.23 and later (MindEye2 pins
2.24.0) apply ``ln_post`` to every token there before dropping CLS: ``post_ln_post``, the
space in which the released models reproduce their published retrieval. open_clip 2.22 and
older returned the tokens before ``ln_post`` (``pre_ln_post``, kept as a switch).

Cache layout (HDF5): ``image_ids`` (N,) int64, sorted; ``tokens`` (N, S, E) float16,
one chunk per image; attributes record the model and the preprocessing.
"""
from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np

from fmri_recon import helpers
from fmri_recon.data import nsd
from fmri_recon.resize import CLIP_MEAN, CLIP_STD

log = logging.getLogger(__name__)

MODEL_CONFIGS = Path(__file__).parents[1] / "model_configs"   # tiny architectures for the demo
TOKEN_NORMS = ("pre_ln_post", "post_ln_post")


def create_clip(arch: str):
    """An open_clip model of architecture ``arch`` with random weights (ours are registered too)."""
    import open_clip

    open_clip.add_model_config(MODEL_CONFIGS)
    if arch not in open_clip.list_models():
        raise ValueError(f"clip_models: unknown open_clip architecture {arch!r}")
    return open_clip.create_model(arch, pretrained=None)


def save_random_clip(arch: str, out_path: str | Path, seed: int = 0) -> None:
    """Write a randomly initialised ``arch`` in the format of a hub checkpoint (safetensors)."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = create_clip(arch)
    # A trained CLIP's last LayerNorm has gains and offsets of its own, which is what makes the
    # tokens before and after it two spaces (check_decoder tells them apart); the identity that
    # PyTorch initialises it to would leave them one space up to each token's scale.
    with torch.no_grad():
        ln_post = model.visual.ln_post
        ln_post.weight.copy_(torch.exp(0.5 * torch.randn_like(ln_post.weight)))
        ln_post.bias.normal_(0.0, 0.1)
    with helpers.atomic_output(out_path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))


def load_vision(arch: str, weights: str | Path, device, dtype):
    """The vision tower of ``arch`` with the checkpoint ``weights`` loaded strictly."""
    import open_clip

    model = create_clip(arch)
    open_clip.load_checkpoint(model, str(weights), strict=True)
    return model.visual.to(device=device, dtype=dtype).eval().requires_grad_(False)


def preprocess(images, image_size: int, zero_one_quirk: bool = True):
    """Images (B,3,H,W) in [0,1] -> normalised encoder input, as upstream's embedder does it."""
    import torch
    import torch.nn.functional as F

    x = images.float()
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", align_corners=True, antialias=True)
    if zero_one_quirk:
        x = (x + 1.0) / 2.0          # upstream assumes [-1,1] input; NSD images are [0,1]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def encode_tokens(visual, x, token_norm: str):
    """Patch tokens (B, S, E) of the last block, CLS dropped, after or before ``ln_post``."""
    return encode_both(visual, x)[token_norm]


def encode_both(visual, x) -> dict:
    """Both token spaces and the pooled (projected) image embedding of one forward pass.

    ``post_ln_post`` is open_clip's own ``visual(x)`` with ``output_tokens=True`` (what sgm's
    embedder calls); ``pre_ln_post`` the same last-block tokens before ``ln_post``."""
    import torch

    hidden = {}

    def keep_input(module, inputs, output):    # returns None: the output stays as it is
        hidden["pre"] = inputs[0]

    hook = visual.ln_post.register_forward_hook(keep_input)
    before = visual.output_tokens
    try:
        visual.output_tokens = True
        pooled, post = visual(x)
    finally:
        visual.output_tokens = before
        hook.remove()
    pre = hidden["pre"][:, -post.shape[1]:]          # ln_post's input: [CLS, patches] -> patches
    if pre.shape != post.shape or not torch.allclose(visual.ln_post(pre), post, atol=1e-3, rtol=1e-3):
        raise RuntimeError(f"{type(visual).__name__}: ln_post's input does not give the output tokens; "
                           "this open_clip version pools differently from the one MindEye2 used")
    return {"pre_ln_post": pre, "post_ln_post": post, "pooled": pooled}


def write_cache(image_ids: np.ndarray, data_dir: str | Path, out_path: str | Path, encode, shapes: dict,
                attrs: dict, batch_size: int = 32, desc: str = "encoding") -> int:
    """Encode images by id into a cache (the layout in this module's docstring), atomically.

    ``encode(images (B,3,H,W) float in [0,1]) -> {name: (B, *shapes[name])}``: one float16
    dataset per name, one chunk per image. Returns the number of images."""
    import torch
    from tqdm import tqdm

    ids = np.unique(np.asarray(image_ids, dtype=np.int64))
    with helpers.atomic_output(out_path) as tmp, h5py.File(tmp, "w") as f, torch.inference_mode():
        f.create_dataset("image_ids", data=ids)
        ds = {k: f.create_dataset(k, shape=(len(ids), *s), dtype=np.float16, chunks=(1, *s))
              for k, s in shapes.items()}
        for start in tqdm(range(0, len(ids), batch_size), desc=desc, unit="batch"):
            out = encode(torch.from_numpy(nsd.read_images(data_dir, ids[start:start + batch_size])))
            for k, v in out.items():
                ds[k][start:start + len(v)] = v.float().cpu().numpy().astype(np.float16)
        f.attrs.update(attrs)
    return len(ids)


def build_cache(image_ids: np.ndarray, data_dir: str | Path, weights: str | Path, out_path: str | Path,
                clip: dict, targets: dict) -> dict:
    """Encode ``image_ids`` (read from the images HDF5 in batches) and write the cache atomically.

    ``clip``: the clip_models entry (arch, seq_dim, emb_dim); ``targets``: the targets block
    (validated config: every key present).
    """
    device, dtype = helpers.resolve_device(targets["device"], targets["precision"])
    visual = load_vision(clip["arch"], weights, device, dtype)
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    expected = (clip["seq_dim"], clip["emb_dim"])
    quirk, norm = bool(targets["zero_one_quirk"]), targets["token_norm"]
    if norm not in TOKEN_NORMS:
        raise ValueError(f"targets.token_norm: {norm!r}, expected one of {TOKEN_NORMS}")

    def encode(images):
        tokens = encode_tokens(visual, preprocess(images.to(device), size, quirk).to(dtype), norm)
        if tuple(tokens.shape[1:]) != expected:
            raise ValueError(f"clip_models: {clip['arch']} gives tokens {tuple(tokens.shape[1:])}, but the "
                             f"config says seq_dim x emb_dim = {expected}")
        return {"tokens": tokens}

    attrs = {"arch": clip["arch"], "weights": Path(weights).name, "seq_dim": expected[0], "emb_dim": expected[1],
             "zero_one_quirk": quirk, "token_norm": norm}
    bs = int(targets["batch_size"])
    log.info("encoding %d images with %s on %s (%s), batch %d", len(np.unique(image_ids)), clip["arch"], device,
             dtype, bs)
    n = write_cache(image_ids, data_dir, out_path, encode, {"tokens": expected}, attrs, bs,
                    f"CLIP targets {clip['arch']}")
    return {**attrs, "images": n}


class TargetCache:
    """Read a cache written by ``write_cache`` by image id (``tokens``: the CLIP targets)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with h5py.File(helpers.need(self.path), "r") as f:
            self.image_ids = f["image_ids"][:]
            self.shape = f["tokens"].shape[1:] if "tokens" in f else None
            self.attrs = dict(f.attrs)

    def get(self, image_ids: np.ndarray, name: str = "tokens") -> np.ndarray:
        """Rows (n, ...) float16 of dataset ``name`` for ``image_ids``, in the order given."""
        image_ids = np.asarray(image_ids, dtype=np.int64)
        pos = np.searchsorted(self.image_ids, image_ids)
        pos = np.minimum(pos, len(self.image_ids) - 1)
        missing = image_ids[self.image_ids[pos] != image_ids]
        if len(missing):
            raise KeyError(f"{self.path}: no {name} for image ids {missing[:10].tolist()} "
                           f"({len(missing)} missing); rebuild this cache for the run's sessions")
        return nsd.read_rows(self.path, name, pos)
