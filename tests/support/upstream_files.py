"""Replicas of upstream's released files, written the way the releasing code wrote them.

Each writer follows the saving code of the file's publisher (docs/upstream.md, "Released files as
written"), at tiny sizes, with what a 2023-24 environment put in the pickle and today's does not:

* numpy 1.x: its pickles name ``numpy.core.multiarray`` (numpy 2 writes ``numpy._core.multiarray``);
  :func:`save` writes that name (``numpy1=True``), byte for byte what numpy 1.x's reduce gives;
* torch 2.1: ``OneCycleLR.state_dict()`` held ``anneal_func``, a method bound to the scheduler, so
  pickling it pickled the scheduler and its AdamW as objects (pytorch/pytorch#106243, changed in
  torch 2.4); :func:`torch21_onecycle_state` rebuilds that entry;
* PyTorch Lightning 2.0 (sgm's trainer): ``epoch``, ``global_step``, ``callbacks``,
  ``optimizer_states``, ``lr_schedulers``, ``loops`` and ``hyper_parameters`` (OmegaConf objects,
  whose module is not installed here: the replica names ``omegaconf.dictconfig.DictConfig``).
"""
from __future__ import annotations

import argparse
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch


class Numpy1Pickler(pickle._Pickler):
    """The pure-Python pickler, naming numpy's core module as numpy 1.x did."""

    def save_global(self, obj, name=None):
        module = getattr(obj, "__module__", None) or ""
        if module.startswith("numpy._core"):
            name = name or obj.__qualname__
            self.write(pickle.GLOBAL + module.replace("numpy._core", "numpy.core").encode() + b"\n"
                       + name.encode() + b"\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


NUMPY1 = types.SimpleNamespace(__name__="numpy1_pickle", Pickler=Numpy1Pickler)


def save(obj, path, numpy1: bool = True, legacy: bool = False) -> Path:
    """``torch.save`` as in 2023-24: numpy-1.x module names; ``legacy``: torch's pre-1.6 format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fake = {"omegaconf": types.ModuleType("omegaconf"), "omegaconf.dictconfig": _OMEGACONF}
    sys.modules.update(fake)               # only while pickling: the loader must not find them
    try:
        torch.save(obj, path, pickle_module=NUMPY1 if numpy1 else pickle,
                   _use_new_zipfile_serialization=not legacy)
    finally:
        for name in fake:
            sys.modules.pop(name, None)
    return path


def numpy1_names(path) -> bool:
    """Whether the file's pickle names numpy's core module as numpy 1.x did (checks the replica)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return b"numpy.core.multiarray" in data and b"numpy._core" not in data


# --------------------------------------------------------------------------- objects of the pickles
class _BoundMethod:
    """Pickles as ``getattr(obj, name)``: how a bound method pickles (torch 2.1's ``anneal_func``)."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


def torch21_onecycle_state(optimizer, total_steps: int, steps_taken: int) -> dict:
    """``OneCycleLR.state_dict()`` as torch 2.1 returned it (upstream's Train.ipynb arguments)."""
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-4, total_steps=total_steps,
                                                final_div_factor=1000, last_epoch=-1, pct_start=2 / 150)
    for _ in range(steps_taken):
        optimizer.step()
        sched.step()
    state = {k: v for k, v in sched.state_dict().items() if k != "_anneal_func_type"}
    return {**state, "anneal_func": _BoundMethod(sched, "_annealing_cos"), "verbose": False}


_OMEGACONF = types.ModuleType("omegaconf.dictconfig")
_OMEGACONF.DictConfig = type("DictConfig", (), {"__module__": "omegaconf.dictconfig"})


def omegaconf_object(content: dict):
    """An object pickled as OmegaConf's ``DictConfig`` is (its class is named, its module is not here)."""
    obj = _OMEGACONF.DictConfig()
    obj.__dict__.update({"_content": content, "_metadata": {"flags": {}}})
    return obj


def runs_code(marker: Path):
    """An object whose unpickling creates ``marker``: a file's pickle must never run it."""
    return _RunsCode(str(marker))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


# --------------------------------------------------------------------------- the files
def last_pth(path, model: torch.nn.Module, epoch: int = 149, extra: dict | None = None) -> Path:
    """``train_logs/<model>/last.pth`` as upstream's ``save_ckpt`` wrote it under torch 2.1."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = torch21_onecycle_state(opt, total_steps=20, steps_taken=3)
    losses = [np.float64(1.5), np.float64(1.2)]        # numpy scalars (docs/upstream.md: where unconfirmed)
    ckpt = {"epoch": epoch, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
            "lr_scheduler": scheduler, "train_losses": losses, "test_losses": [np.float64(2.0)],
            "lrs": [np.float64(3e-4)], **(extra or {})}
    return save(ckpt, path)


def lightning_ckpt(path, state_dict: dict, extra: dict | None = None) -> Path:
    """A PyTorch Lightning 2.0 checkpoint of sgm's DiffusionEngine (``unclip6_epoch0_step110000.ckpt``)."""
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(params, lr=1e-5)
    params[0].grad, params[1].grad = torch.ones(3), torch.ones(2)
    opt.step()
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lambda step: 1.0)
    callback = ("ModelCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 5000, "
                "'every_n_epochs': 0, 'train_time_interval': None}")
    ckpt = {
        "epoch": 0, "global_step": 110000, "pytorch-lightning_version": "2.0.1",
        "state_dict": OrderedDict(state_dict),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1, "completed": 0}},
                               "epoch_loop.batch_progress": {"total": {"ready": 110000}}}},
        "callbacks": {callback: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                 "current_score": None, "dirpath": "/weka/proj-fmri/logs/checkpoints",
                                 "best_k_models": {}, "kth_best_model_path": "", "kth_value": torch.tensor(np.inf),
                                 "last_model_path": ""}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [lambda_lr.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": omegaconf_object({"scale_factor": 0.13025, "disable_first_stage_autocast": True}),
        **(extra or {}),
    }
    return save(ckpt, path)


def converter_file(path, state_dict: dict) -> Path:
    """``bigG_to_L_epoch8.pth``: only ``model_state_dict`` is known (recon_inference.ipynb reads it);
    the rest is assumed to be Train.ipynb's save_ckpt layout, the notebook it was adapted from."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    return save({"epoch": 8, "model_state_dict": state_dict, "optimizer_state_dict": opt.state_dict(),
                 "lr_scheduler": torch21_onecycle_state(opt, 30, 2), "train_losses": [np.float64(0.3)],
                 "test_losses": [np.float64(0.4)], "lrs": [np.float64(1e-4)]}, path)


def gnet_file(path, shared: dict, fwrfs: dict[int, dict], input_mean: float = 0.45) -> Path:
    """``gnet_multisubject.pt`` (GNet8, NSD-era code, numpy 1.x): the keys upstream's
    ``GNet8_Encoder`` reads, numpy arrays and scalars beside the tensors of ``best_params``."""
    nv = {s: len(p["b"]) for s, p in fwrfs.items()}
    return save({
        "voxel_mask": {s: np.ones(n, bool) for s, n in nv.items()},
        "voxel_roi": {s: np.arange(n, dtype=np.int32) % 7 for s, n in nv.items()},
        "voxel_index": {s: (np.arange(n, dtype=np.int64),) for s, n in nv.items()},
        "brain_nii_shape": {s: np.array([81, 104, 83]) for s in nv},
        "val_cc": {s: np.linspace(0, 0.5, n).astype(np.float32) for s, n in nv.items()},
        "input_mean": np.full((1, 3, 1, 1), input_mean, np.float32),
        "trunk_width": np.int64(64),
        "best_params": {"enc": OrderedDict(shared), "fwrfs": fwrfs},
    }, path)


def vae_file(path, state_dict: dict) -> Path:
    """``sd_image_var_autoenc.pth``: ``torch.save(autoenc.state_dict())``, here in torch's legacy
    (pre-1.6) format, the harder of the two it could be in (docs/upstream.md)."""
    return save(OrderedDict(state_dict), path, numpy1=False, legacy=True)


def teacher_file(path, model_state: dict) -> Path:
    """``convnext_xlarge_alpha0.75_fullckpt.pth`` (VICRegL's "full checkpoint"): ``model`` is what
    upstream reads; the epoch, optimizer state and argparse arguments beside it are assumed."""
    opt_state = {"state": {}, "param_groups": [{"lr": 0.3, "weight_decay": 1e-6, "params": [0]}]}
    return save({"epoch": 300, "model": OrderedDict(model_state), "optimizer": opt_state,
                 "args": argparse.Namespace(arch="convnext_xlarge", alpha=0.75, exp_dir=Path("/checkpoint"))}, path)


def captions_file(path, captions: list[str]) -> Path:
    """``evals/all_captions.pt`` or a ``*_all_predcaptions.pt``: a numpy str array (``np.hstack``
    of the generated captions), pickled under numpy 1.x."""
    return save(np.array(captions), path)
