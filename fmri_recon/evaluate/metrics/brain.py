"""Brain correlation (docs/upstream.md §5.6): do reconstructions evoke the measured activity?

A frozen image-to-fMRI encoding model, GNet8 (St-Yves et al.; MindEye2 uses a multi-subject
version, ``gnet_multisubject.pt``), predicts each subject's voxel responses to the
reconstructions; per region of interest the prediction of every test image is correlated with
the measured responses (averaged over repeats) across the region's voxels, and the
correlations are averaged over images.

What was checked against the sources, and what was not
------------------------------------------------------
Read: MindEyeV2 ``src/models.py`` at ``c184718`` (``TrunkBlock``, ``PreFilter``, ``EncStage``,
``GEncoder``, ``Torch_LayerwiseFWRF``, ``GNet8_Encoder``), ``final_evaluations.ipynb`` cells
32-34, and St-Yves' ``nsd_gnet8x`` (``gnet8j_encoding_multisubjects.ipynb``: how the
checkpoint is saved).  From them, and reproduced here:

* layers and shapes: prefilter = AlexNet's conv1 (3->64, k11 s4 p2, ReLU, maxpool 3/2) and
  conv2 (64->192, k5 p2, ReLU); stage: BN(192) -> Dropout2d -> conv3 (192->128, k3, ReLU) ->
  six trunk blocks (BN -> Dropout2d -> conv k3 p1 -> ReLU) of width ``trunk_width +
  pass_through`` (= 64 + 192 as MindEye2 calls it) with a maxpool (3/2, p1) before the fifth;
  the last block is ``trunk_width`` wide.  Two feature maps, both 256 channels: [conv3,
  conv4a[:64], conv4b[:64]] at 25x25 and [conv5a[:64], conv5b[:64], conv6a[:64], conv6b] at
  13x13 for 227x227 inputs.  BN eps 1e-5, momentum 0.25.
* the per-subject readout (feature-weighted receptive fields): ``rf0`` (V,25,25), ``rf1``
  (V,13,13) pooling fields, softmax-normalised over space; ``w`` (V,512); ``b`` (V,);
  the nonlinearity ``log(1+|x|)*tanh(x)`` applied to the features before pooling and to the
  pooled features before the weights.
* parameter names: shared ``mu, pre.conv1.0.*, pre.conv2.0.*, enc.conv3.*, enc.bn1.*,
  enc.conv{4,5,6}{a,b}.{conv1,bn1}.*``; per subject ``rf0, rf1, w, b``.  The checkpoint holds
  ``best_params = {"enc": <shared state dict>, "fwrfs": {subject: <readout state dict>}}``,
  ``input_mean`` (the ``mu`` it is built from), ``val_cc`` (per-subject voxel count) and voxel
  masks; :meth:`GNet8Encoder.load_upstream` loads both parts with ``strict=True``.
* preprocessing (upstream ``GNet8_Encoder.predict`` on a list of PIL images made by
  ``transforms.ToPILImage``): float [0,1] -> uint8 by ``x*255`` truncated (ToPILImage's
  ``mul(255).byte()``), resize to 227x227 with LANCZOS, ``/255`` to float32, CHW.
* per-subject voxel counts (upstream's ``subject_sizes``): :data:`SUBJECT_NUM_VOXELS`, the
  nsdgeneral counts of the betas files.  Upstream indexes GNet's output and the measured betas
  with the same masks, so the readout must have that many voxels.
* the score: ``torchmetrics.PearsonCorrCoef(num_outputs=N)`` on (voxels, images) tensors,
  i.e. one Pearson r per image across the region's voxels, then ``torch.mean`` over images.

Not verified (``gnet_multisubject.pt`` is a download we cannot make): the shape of its
``input_mean`` (St-Yves' training code saves a per-channel mean of shape (1,3,1,1); it is
read from the checkpoint anyway), that its readouts have exactly :data:`SUBJECT_NUM_VOXELS`
voxels (the loader takes the sizes from the checkpoint), and its numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmri_recon.data import nsd

__all__ = [
    "REGIONS",
    "SUBJECT_NUM_VOXELS",
    "GNet8Config",
    "GNet8Encoder",
    "brain_correlation",
    "feature_map_sizes",
    "pearson_per_row",
    "predict_voxels",
    "preprocess",
    "read_masks",
]

REGIONS = nsd.MASK_REGIONS

# Upstream's per-subject output sizes of GNet8 (= nsdgeneral voxels of each subject's betas).
SUBJECT_NUM_VOXELS = {1: 15724, 2: 14278, 3: 15226, 4: 13153, 5: 13039, 6: 17907, 7: 12682, 8: 14386}


@dataclass(frozen=True)
class GNet8Config:
    """Sizes of GNet8.  The defaults are the values MindEye2 uses (``trunk_width=64,
    pass_through=192``, 227x227 inputs); tests shrink ``input_size`` only."""

    trunk_width: int = 64
    pass_through: int = 192
    input_size: int = 227


def _log_act(x: torch.Tensor) -> torch.Tensor:
    # GNet8's compressive nonlinearity, odd and smooth: sign(x) * log(1 + |x|), softened by tanh.
    return torch.log1p(x.abs()) * torch.tanh(x)


def feature_map_sizes(input_size: int) -> tuple[int, int]:
    """Spatial sizes of GNet8's two feature maps for square ``input_size`` inputs (227 -> 25, 13)."""
    s = (input_size + 2 * 2 - 11) // 4 + 1       # conv1: k11 s4 p2
    s = (s - 3) // 2 + 1                         # maxpool 3/2
    s = s - 2                                    # conv2 keeps the size; conv3 k3 p0 removes 2
    s2 = (s + 2 * 1 - 3) // 2 + 1                # maxpool 3/2 p1 before conv5a
    if s < 1 or s2 < 1:
        raise ValueError(f"GNet8: input size {input_size} is too small")
    return s, s2


class _TrunkBlock(nn.Module):
    """BN -> Dropout2d -> 3x3 conv -> ReLU (upstream names: bn1, drop1, conv1)."""

    def __init__(self, feat_in: int, feat_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(feat_in, feat_out, kernel_size=3, stride=1, padding=1)
        self.drop1 = nn.Dropout2d(p=0.5)
        self.bn1 = nn.BatchNorm2d(feat_in, eps=1e-5, momentum=0.25)
        nn.init.xavier_normal_(self.conv1.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(self.conv1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv1(self.drop1(self.bn1(x))))


class _PreFilter(nn.Module):
    """AlexNet's first two conv layers (upstream names: conv1.0, conv2.0)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
                                   nn.MaxPool2d(kernel_size=3, stride=2))
        self.conv2 = nn.Sequential(nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class _EncStage(nn.Module):
    """The trained trunk; returns GNet8's two multi-layer feature maps."""

    def __init__(self, trunk_width: int, pass_through: int):
        super().__init__()
        self.tw = int(trunk_width)
        width = self.tw + int(pass_through)
        self.conv3 = nn.Conv2d(192, 128, kernel_size=3, stride=1, padding=0)
        self.drop1 = nn.Dropout2d(p=0.5)
        self.bn1 = nn.BatchNorm2d(192, eps=1e-5, momentum=0.25)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv4a = _TrunkBlock(128, width)
        self.conv5a = _TrunkBlock(width, width)
        self.conv6a = _TrunkBlock(width, width)
        self.conv4b = _TrunkBlock(width, width)
        self.conv5b = _TrunkBlock(width, width)
        self.conv6b = _TrunkBlock(width, self.tw)
        nn.init.xavier_normal_(self.conv3.weight, gain=nn.init.calculate_gain("relu"))
        nn.init.zeros_(self.conv3.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tw = self.tw
        c3 = torch.relu(self.conv3(self.drop1(self.bn1(x))))
        c4a = self.conv4a(c3)
        c4b = self.conv4b(c4a)
        c5a = self.conv5a(self.pool1(c4b))
        c5b = self.conv5b(c5a)
        c6a = self.conv6a(c5b)
        c6b = self.conv6b(c6a)
        # Only the first trunk_width channels of each block are read out; the rest only feed on.
        return [torch.cat([c3, c4a[:, :tw], c4b[:, :tw]], dim=1),
                torch.cat([c5a[:, :tw], c5b[:, :tw], c6a[:, :tw], c6b], dim=1)]


class _SharedEncoder(nn.Module):
    """Upstream ``GEncoder``: subtract the training images' mean ``mu``, prefilter, trunk."""

    def __init__(self, mu: np.ndarray, trunk_width: int, pass_through: int):
        super().__init__()
        # A frozen Parameter (not a buffer) because that is how upstream stores it.
        self.mu = nn.Parameter(torch.as_tensor(np.asarray(mu, dtype=np.float32)), requires_grad=False)
        self.pre = _PreFilter()
        self.enc = _EncStage(trunk_width, pass_through)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.enc(self.pre(x - self.mu))


class _Readout(nn.Module):
    """Upstream ``Torch_LayerwiseFWRF``: per voxel, a softmax pooling field on each feature map
    and a linear weighting of the pooled features."""

    def __init__(self, channels: Sequence[int], sizes: Sequence[int], num_voxels: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.num_maps = len(sizes)
        for k, s in enumerate(sizes):
            # Upstream starts from flat fields (ones); names rf0, rf1 as in its state dict.
            self.register_parameter(f"rf{k}", nn.Parameter(torch.ones(num_voxels, s, s)))
        self.w = nn.Parameter(0.01 * torch.randn(num_voxels, sum(channels), generator=g))
        self.b = nn.Parameter(0.01 * torch.randn(num_voxels, generator=g))

    def forward(self, fmaps: Sequence[torch.Tensor]) -> torch.Tensor:
        pooled = []
        for k, fm in enumerate(fmaps):
            field = torch.softmax(getattr(self, f"rf{k}").flatten(1), dim=1)          # (V, S)
            pooled.append(torch.einsum("vs,bcs->bvc", field, _log_act(fm.flatten(2))))  # (B, V, C)
        phi = _log_act(torch.cat(pooled, dim=2))                                     # (B, V, F)
        return (phi * self.w).sum(-1) + self.b                                       # (B, V)


class GNet8Encoder(nn.Module):
    """GNet8 with one readout per subject: ``model(x, subject) -> (N, V_subject)``.

    ``subjects`` maps subject number -> voxel count (default: :data:`SUBJECT_NUM_VOXELS`).
    ``input_mean`` is the training images' mean subtracted first (default zeros (1,3,1,1)).
    A new model is randomly initialised (seeded); :meth:`load_upstream` loads
    ``gnet_multisubject.pt``.  Inputs are ``(N, 3, S, S)`` float in [0, 1] at
    ``config.input_size`` (use :func:`predict_voxels` to get there from any image).
    """

    def __init__(self, subjects: Mapping[int, int] | None = None, config: GNet8Config = GNet8Config(),
                 input_mean: Any = None, seed: int = 0):
        super().__init__()
        subjects = dict(SUBJECT_NUM_VOXELS if subjects is None else subjects)
        self.config = config
        mu = np.zeros((1, 3, 1, 1), np.float32) if input_mean is None else input_mean
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.shared = _SharedEncoder(mu, config.trunk_width, config.pass_through)
        sizes = feature_map_sizes(config.input_size)
        channels = (128 + 2 * config.trunk_width, 4 * config.trunk_width)
        self.fwrfs = nn.ModuleDict({str(int(s)): _Readout(channels, sizes, int(n), seed=seed + int(s))
                                    for s, n in subjects.items()})
        self.eval()

    @property
    def subjects(self) -> dict[int, int]:
        return {int(s): m.w.shape[0] for s, m in self.fwrfs.items()}

    def forward(self, x: torch.Tensor, subject: int) -> torch.Tensor:
        key = str(int(subject))
        if key not in self.fwrfs:
            raise KeyError(f"GNet8 has no readout for subject {subject}; it has {sorted(self.subjects)}")
        return self.fwrfs[key](self.shared(x))

    @classmethod
    def load_upstream(cls, path: str | Path, subjects: Iterable[int] | None = None,
                      device: str | torch.device = "cpu") -> "GNet8Encoder":
        """Build from upstream's ``gnet_multisubject.pt`` (the readouts of ``subjects``, default all).

        The file holds numpy arrays pickled under numpy 1.x beside the tensors; it is read with
        exactly those globals allowed (fmri_recon.data.released). Shared weights and readouts are
        loaded strictly.
        """
        from fmri_recon.data import released

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: GNet8 checkpoint not found (MindEye2's gnet_multisubject.pt)")
        ckpt = released.load(path)
        try:
            best = ckpt["best_params"]
            fwrfs = best["fwrfs"]
            sizes = {int(s): int(len(v)) for s, v in ckpt["val_cc"].items()}
            input_mean = np.asarray(ckpt["input_mean"], dtype=np.float32)
        except (KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a GNet8 checkpoint (expected best_params/enc, best_params/fwrfs, "
                             f"val_cc, input_mean): missing {e}") from None
        wanted = sorted(sizes) if subjects is None else [int(s) for s in subjects]
        missing = [s for s in wanted if s not in sizes]
        if missing:
            raise KeyError(f"{path}: no readout for subject(s) {missing}; it has {sorted(sizes)}")
        model = cls({s: sizes[s] for s in wanted}, GNet8Config(), input_mean=input_mean)
        model.shared.load_state_dict(best["enc"], strict=True)
        by_key = {int(k): v for k, v in fwrfs.items()}
        for s in wanted:
            model.fwrfs[str(s)].load_state_dict(by_key[s], strict=True)
        return model.to(device).eval()


def preprocess(images: torch.Tensor, size: int = 227) -> torch.Tensor:
    """Upstream's GNet8 input: [0,1] float -> uint8 (x*255 truncated, as ToPILImage does) ->
    PIL LANCZOS resize to ``size`` x ``size`` -> float32 /255, ``(N, 3, size, size)``."""
    from PIL import Image

    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"GNet8: expected images (N, 3, H, W), got {tuple(x.shape)}")
    # Clamp first: ToPILImage would wrap out-of-range values around (uint8 overflow).
    u8 = (x.detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = [np.asarray(Image.fromarray(im).resize((size, size), resample=Image.Resampling.LANCZOS),
                      dtype=np.float32) / 255.0 for im in u8]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def predict_voxels(model: GNet8Encoder, images: torch.Tensor, subject: int, *, batch_size: int = 16,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Predicted responses ``(N, V)`` (float32, CPU) of ``subject`` to ``images`` (N,3,H,W) in [0,1].

    Batches keep memory bounded: the readout holds a (batch, V, 512) tensor.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            x = preprocess(images[i:i + batch_size], model.config.input_size).to(device)
            out.append(model(x, subject).float().cpu())
    return torch.cat(out)


def pearson_per_row(a: Any, b: Any) -> torch.Tensor:
    """Pearson r of row ``i`` of ``a`` with row ``i`` of ``b`` (float64, clipped to [-1, 1];
    NaN for a constant row, as torchmetrics gives)."""
    a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).double()
    b = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b).double()
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    r = (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1))
    return r.clamp(-1.0, 1.0)


def brain_correlation(pred: Any, measured: Any, masks: Mapping[str, Any]) -> dict[str, float]:
    """Per region: mean over images of the Pearson r across the region's voxels.

    ``pred`` and ``measured`` are ``(N, V)`` (predicted responses to the reconstructions; test
    responses averaged over repeats), ``masks`` maps region -> boolean ``(V,)``.  As upstream,
    an image whose responses are constant in a region makes that region's mean NaN; a region
    with fewer than 2 voxels is NaN.
    """
    pred = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred)
    measured = torch.as_tensor(np.asarray(measured) if not torch.is_tensor(measured) else measured)
    if pred.ndim != 2 or pred.shape != measured.shape:
        raise ValueError(f"brain_correlation: pred {tuple(pred.shape)} and measured {tuple(measured.shape)} "
                         "must both be (images, voxels)")
    out = {}
    for region, mask in masks.items():
        mask = torch.as_tensor(np.asarray(mask, dtype=bool))
        if mask.shape != (pred.shape[1],):
            raise ValueError(f"brain_correlation: mask {region!r} has shape {tuple(mask.shape)}, "
                             f"expected ({pred.shape[1]},)")
        if int(mask.sum()) < 2:
            out[region] = float("nan")
            continue
        out[region] = float(pearson_per_row(pred[:, mask], measured[:, mask]).mean())
    return out


def read_masks(path: str | Path, subject: int | str) -> dict[str, np.ndarray]:
    """Region masks of ``subject`` from ``brain_region_masks.hdf5`` (group ``subj0X``, boolean
    datasets :data:`REGIONS`, all of one length: the subject's voxels)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: brain region masks not found (brain_region_masks.hdf5 from "
                                "MindEye2's evals, or synthetic.write_masks for the demo)")
    group = nsd.mask_group(subject)
    with h5py.File(path, "r") as f:
        if group not in f:
            raise KeyError(f"{path}: no group {group!r} (has {sorted(f.keys())})")
        g = f[group]
        missing = [r for r in REGIONS if r not in g]
        if missing:
            raise KeyError(f"{path}: group {group!r} lacks dataset(s) {missing} (has {sorted(g.keys())})")
        masks = {}
        for region in REGIONS:
            data = np.asarray(g[region][()])
            if data.ndim != 1:
                raise ValueError(f"{path}: {group}/{region} has shape {data.shape}, expected (voxels,)")
            if data.dtype != bool:
                if not np.isin(data, (0, 1)).all():
                    raise ValueError(f"{path}: {group}/{region} is {data.dtype} with values other than 0/1")
                data = data.astype(bool)
            masks[region] = data
    lengths = {r: len(m) for r, m in masks.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: masks of {group} differ in length: {lengths}")
    return masks
