"""Logging for the stage scripts: to the rule's log file and to the console."""
from __future__ import annotations

import atexit
import logging
import re
import sys
from pathlib import Path


def setup(log_file: str | Path | None, level: int = logging.INFO) -> logging.Logger:
    """Send every logger's records to ``log_file`` (the rule's ``log:``) and to stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    atexit.register(_log_peak_gpu)
    return logging.getLogger("fmri_recon")


def _log_uncaught(kind, value, tb):
    """A job that dies says why in its log file, not only on the console."""
    logging.getLogger("fmri_recon").critical("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))


PEAK_GPU = "peak GPU memory allocated"
_PEAK_LINE = re.compile(PEAK_GPU + r": ([0-9.]+) MiB")


def _log_peak_gpu():
    """At exit, a stage that used CUDA says its peak memory there: the cost table reads it
    (``peak_gpu_mb``). Nothing is said on the CPU."""
    torch = sys.modules.get("torch")                     # never import torch for this
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    peak = max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
    logging.getLogger("fmri_recon").info("%s: %.0f MiB", PEAK_GPU, peak / 2**20)


def peak_gpu_mb(log_file: str | Path) -> float | None:
    """The largest peak GPU memory a stage's log reports (one line per process), or None."""
    text = Path(log_file).read_text(errors="replace") if Path(log_file).exists() else ""
    peaks = [float(m.group(1)) for m in _PEAK_LINE.finditer(text)]
    return max(peaks) if peaks else None
