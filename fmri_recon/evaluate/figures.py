"""Figures of the evaluation: the reconstruction grids (one experiment's, and the overview of all).

They draw with matplotlib's Agg backend (no display needed), at a fixed pixel size (no
"tight" bounding box, so tests and READMEs can rely on it), and write atomically.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["grid_png", "grid_size", "new_figure", "save_png"]

CELL_PX = 128        # one image in the grid
SMALL_CELL_PX = 80   # one image in the overview, which shows every run side by side
CAPTION_PX = 256     # width of the caption column
HEADER_PX = 24       # column titles
DPI = 100

def new_figure(width_px: int, height_px: int):
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> Path:
    from fmri_recon.helpers import atomic_output

    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)   # the temporary name has no .png suffix
    return Path(path)


def _to_hwc(img: Any):
    import numpy as np
    import torch

    x = torch.as_tensor(img).detach().float().cpu().clamp(0, 1)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"grid_png: expected images (N, 3, H, W), got an image of shape {tuple(x.shape)}")
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def grid_size(n: int, n_columns: int = 3, with_captions: bool = True, cell_px: int = CELL_PX,
              title_lines: int = 1) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of :func:`grid_png` for ``n`` rows of ``n_columns`` images."""
    return n_columns * cell_px + (CAPTION_PX if with_captions else 0), n * cell_px + HEADER_PX * title_lines


def grid_png(columns: Sequence[tuple[str, Any]], captions: Sequence[str] | None, path: str | Path,
             n: int = 8, *, caption_title: str = "predicted caption", cell_px: int = CELL_PX) -> Path:
    """A grid of the first ``n`` test images: one titled column per image set, then the captions.

    ``columns``: ``(title, images)`` pairs in drawing order, the images ``(N, 3, H, W)`` in
    [0, 1] (the ground truth first, then each stage a table row scores); ``captions``: one per
    row (or None).  Size: :func:`grid_size`.
    """
    if not columns:
        raise ValueError("grid_png: no columns to draw")
    n = min(int(n), *(len(images) for _, images in columns))
    if n < 1:
        raise ValueError("grid_png: no images to draw")
    lines = max(title.count("\n") + 1 for title, _ in columns)
    header = HEADER_PX * lines
    width, height = grid_size(n, len(columns), captions is not None, cell_px, lines)
    fig = new_figure(width, height)
    for j, (title, images) in enumerate(columns):
        fig.text((j + 0.5) * cell_px / width, 1 - header / 2 / height, title,
                 ha="center", va="center", fontsize=7 if cell_px < CELL_PX else 9)
        for i in range(n):
            # add_axes takes [left, bottom, width, height] as fractions of the figure.
            ax = fig.add_axes([j * cell_px / width, 1 - (header + (i + 1) * cell_px) / height,
                               cell_px / width, cell_px / height])
            ax.imshow(_to_hwc(images[i]), interpolation="bilinear")
            ax.set_axis_off()
    if captions is not None:
        left = len(columns) * cell_px / width
        fig.text(left + 0.5 * CAPTION_PX / width, 1 - header / 2 / height, caption_title,
                 ha="center", va="center", fontsize=9)
        for i in range(n):
            text = textwrap.fill(str(captions[i]) if i < len(captions) else "", width=34)
            fig.text(left + 8 / width, 1 - (header + (i + 0.5) * cell_px) / height, text,
                     ha="left", va="center", fontsize=8, wrap=False)
    return save_png(fig, path)
