"""Small helpers every stage shares: atomic writes, JSON, required files, device choice, resumable chunks.

Kept free of heavy imports (torch is imported inside the functions that need it), so the
Snakefile and light stages can use them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file is missing or does not have the layout and contents expected of it."""


def need(path: str | Path) -> Path:
    """``path`` as a Path, or a DataError naming it when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the pscotti/mindeyev2 layout under the data directory)")
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ""):
    """Yield a temporary sibling of ``path`` to write; move it into place only on success.
    ``suffix`` ends the temporary name, for writers that choose the format by it (nibabel, scipy.io).

    A failed or killed writer never leaves a file at ``path`` that looks complete, and an
    exception removes the temporary file too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path):
    """Yield a temporary sibling folder to fill; it becomes ``out_dir`` only on success."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; remove it to rebuild")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out_dir.exists():
            out_dir.rmdir()          # empty (checked above)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: dict, sort_keys: bool = True) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def resolve_device(device: str = "auto", precision: str = "auto"):
    """(device, dtype): CUDA and fp16 when there is a GPU, else CPU and fp32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    return torch.device(device), dtypes[precision]


# --------------------------------------------------------------------------- resumable chunks
def progress_dir(out_dir: str | Path, stage: str, settings: dict, inputs) -> Path:
    """The folder of finished chunks of one output: named by what the output depends on (the
    settings and every input by path and modification time), so a changed input or setting
    never reuses old chunks."""
    key = {"settings": settings, "inputs": [(str(x), Path(x).stat().st_mtime_ns) for x in inputs]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(out_dir) / f".progress-{stage}-{digest}"


def chunked(n: int, chunk: int, progress: Path, work) -> list:
    """Run ``work(start, stop)`` per chunk, keeping each finished chunk's result on disk: a killed
    job resumes at the first chunk it had not finished."""
    import torch

    progress.mkdir(parents=True, exist_ok=True)
    results = []
    for start in range(0, n, chunk):
        path = progress / f"{start:06d}.pt"
        if path.exists():
            results.append(torch.load(path, weights_only=False))
            log.info("images %d-%d: already done", start, min(start + chunk, n) - 1)
            continue
        result = work(start, min(start + chunk, n))
        with atomic_output(path) as tmp:
            torch.save(result, tmp)
        results.append(result)
    return results


def remove_progress(progress: Path) -> None:
    """Drop the finished chunks once the output they make is written."""
    shutil.rmtree(progress, ignore_errors=True)
