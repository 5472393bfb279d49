"""Logging for the stage scripts: to the rule's log file and to the console."""
from __future__ import annotations

import logging
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
    return logging.getLogger("fmri_recon")


def _log_uncaught(kind, value, tb):
    """A job that dies says why in its log file, not only on the console."""
    logging.getLogger("fmri_recon").critical("%s: %s", kind.__name__, value, exc_info=(kind, value, tb))
