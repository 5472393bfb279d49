"""Reading torch files as their publishers wrote them, without running their pickles.

Upstream's released files (docs/upstream.md, "Released files as written") are torch pickles made
in 2023-24 by code we do not control:

* numpy 1.x wrote the caption arrays and GNet's arrays; its pickles name
  ``numpy.core.multiarray._reconstruct`` and ``numpy.core.multiarray.scalar``, which numpy 2
  calls ``numpy._core.multiarray.*``;
* torch 2.1 wrote ``last.pth`` and the converter; its ``OneCycleLR.state_dict()`` holds
  ``anneal_func``, a method bound to the scheduler, so the pickle holds the scheduler and its
  optimizer as objects (pytorch/pytorch#106243, fixed in 2.4 by #123775);
* PyTorch Lightning wrote the unCLIP checkpoint, with callback states and ``hyper_parameters``
  (OmegaConf objects, which need ``omegaconf`` installed to unpickle).

:func:`load` reads a file with torch's weights-only unpickler, allowing exactly the numpy globals
such files hold under both of numpy's names. A file that also holds objects outside that set
(the three cases above, in keys we never read) is read again with each such object replaced by an
inert placeholder: nothing the pickle names outside the allowlist is imported or called, so no
file is ever fully unpickled, and the log names what was left out. :func:`tensors` then refuses a
placeholder wherever the workflow needs tensors.
"""
from __future__ import annotations

import logging
import pickle
import types
from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers

log = logging.getLogger("fmri_recon.data.released")


def _numpy_globals() -> list:
    """What numpy arrays, dtypes and scalars unpickle with, named as numpy 1.x and 2.x write them.
    The dtype classes are there because unpickling a dtype sets its state (BUILD)."""
    core = np._core.multiarray
    out = [np.ndarray, np.dtype, *(c for c in vars(np.dtypes).values() if isinstance(c, type))]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        out += [(core._reconstruct, f"{module}._reconstruct"), (core.scalar, f"{module}.scalar")]
    return out


NUMPY_GLOBALS = _numpy_globals()


class Placeholder(dict):
    """Stands for an object the pickle names but the allowlist does not: it takes any arguments
    and state, and keeps them (a dict, so that pickle's SETITEMS and APPENDS land here too)."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args, self.state, self.items_appended = args, None, []

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):      # e.g. what getattr(<placeholder>, name) stands for
        return type(self)(*args, **kwargs)

    def append(self, item):
        self.items_appended.append(item)

    def extend(self, items):
        self.items_appended.extend(items)


def _allowed() -> dict:
    # torch's own weights-only allowlist (tensors, storages, OrderedDict, dtypes, ...) plus numpy's:
    # the inert reader allows exactly what the weights-only one does.
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = dict(_get_allowed_globals())
    for g in NUMPY_GLOBALS:
        obj, name = g if isinstance(g, tuple) else (g, f"{g.__module__}.{g.__qualname__}")
        allowed[name] = obj
    return allowed


def _inert_pickle_module(replaced: set):
    allowed = _allowed()

    class InertUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            replaced.add(full)
            return type(name, (Placeholder,), {"__module__": f"placeholder.{module}"})

    return types.SimpleNamespace(__name__="fmri_recon.data.released.inert", Unpickler=InertUnpickler,
                                 load=pickle.load)


def load(path: str | Path, *, mmap: bool = False):
    """The object a torch file holds, read safely (module docstring). ``mmap``: tensors stay on disk
    until used (a 10 GB ``last.pth`` whose optimizer state is never read costs no memory)."""
    path = helpers.need(Path(path))
    try:
        with torch.serialization.safe_globals(NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as first:
        replaced: set = set()
        try:
            obj = torch.load(path, map_location="cpu", mmap=mmap, weights_only=False,
                             pickle_module=_inert_pickle_module(replaced))
        except Exception as e:
            raise ValueError(f"{path}: cannot be read as a torch file ({e}); the weights-only reader "
                             f"said: {str(first).splitlines()[0]}") from e
        log.info("%s: read without unpickling %d kinds of object outside the allowlist (left as inert "
                 "placeholders, never imported or run): %s", path, len(replaced), ", ".join(sorted(replaced)))
        return obj


def tensors(obj, path, key: str) -> dict[str, torch.Tensor]:
    """``obj`` (the part of ``path`` under ``key``) as a state dict: every value a tensor, else a
    ValueError naming the file, the key and what stood there instead."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {key!r} is a {_kind(obj)}, expected a state dict of tensors")
    bad = {k: _kind(v) for k, v in obj.items() if not isinstance(v, torch.Tensor)}
    if bad:
        first = list(bad.items())[:5]
        raise ValueError(f"{path}: {key!r} holds {len(bad)} entries that are not tensors, e.g. {first}")
    return dict(obj)


def item(obj: dict, key: str, path):
    """``obj[key]``, or a ValueError naming the file and the keys it has."""
    if not isinstance(obj, dict) or key not in obj:
        have = sorted(obj)[:10] if isinstance(obj, dict) else _kind(obj)
        raise ValueError(f"{path}: no {key!r} (has {have})")
    return obj[key]


def _kind(v) -> str:
    if isinstance(v, Placeholder):
        return f"unread object {type(v).__module__.removeprefix('placeholder.')}.{type(v).__name__}"
    return type(v).__name__
