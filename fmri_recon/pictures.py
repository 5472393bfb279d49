"""Figures of the evaluation: a reconstruction grid and a bar chart of the metrics table.

Both draw with matplotlib's Agg backend (no display needed), at a fixed pixel size (no
"tight" bounding box, so tests and READMEs can rely on it), and write atomically.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["BAR_METRICS", "grid_png", "grid_size", "learning_curve", "metrics_bar_chart", "pareto_chart"]

CELL_PX = 128        # one image in the grid
SMALL_CELL_PX = 80   # one image in the overview, which shows every run side by side
CAPTION_PX = 256     # width of the caption column
HEADER_PX = 24       # column titles
DPI = 100

# Metrics of the bar chart, with their chance level (None: no meaningful chance line).
# Retrieval chance depends on the draw size and is read from the table.
BAR_METRICS = {
    "pixcorr": 0.0, "ssim": None, "alexnet2": 0.5, "alexnet5": 0.5, "inception": 0.5, "clip": 0.5,
    "efficientnet": None, "swav": None, "image_to_brain": "draw", "brain_to_image": "draw",
}
BAR_LABELS = {
    "pixcorr": "PixCorr", "ssim": "SSIM", "alexnet2": "Alex(2)", "alexnet5": "Alex(5)", "inception": "Incep",
    "clip": "CLIP", "efficientnet": "Eff ↓", "swav": "SwAV ↓", "image_to_brain": "Image retr.",
    "brain_to_image": "Brain retr.",
}


def _figure(width_px: int, height_px: int):
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or figure registry.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    from .helpers import atomic_output

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
    fig = _figure(width, height)
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
    return _save(fig, path)


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def metrics_bar_chart(table_csv: str | Path, path: str | Path, size_px: tuple[int, int] = (1000, 450)) -> Path:
    """Grouped bars of the main metrics (:data:`BAR_METRICS`), one bar per experiment.

    Each experiment is shown at its most refined stage present (fmri_recon.results.final_rows:
    enhanced, else recon, else blurry).  Dashed lines mark chance where it is defined (0.5 for two-way identification,
    0 for PixCorr, 1/draw size for retrieval).  Missing values leave a gap.
    """
    import numpy as np

    from .results import final_rows
    from .tables import read_table

    chosen = {row["experiment"]: row for row in final_rows(read_table(table_csv))}
    fig = _figure(*size_px)
    ax = fig.add_axes([0.07, 0.16, 0.72, 0.74])
    metrics = list(BAR_METRICS)
    x = np.arange(len(metrics))
    width = 0.8 / max(len(chosen), 1)
    for k, (name, row) in enumerate(chosen.items()):
        values = [_float(row.get(m)) for m in metrics]
        ax.bar(x - 0.4 + (k + 0.5) * width, values, width, label=f"{name} ({row['stage']})")
    for i, m in enumerate(metrics):
        chance = BAR_METRICS[m]
        if chance == "draw":
            sizes = [_float(r.get("retrieval_draw_size")) for r in chosen.values()]
            sizes = [s for s in sizes if s > 0]
            chance = 1 / min(sizes) if sizes else None
        if chance is not None:
            ax.hlines(chance, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(x, [BAR_LABELS[m] for m in metrics], rotation=30, ha="right")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(1.0, ax.get_ylim()[1]))
    ax.set_ylabel("score (fraction)")
    ax.set_title("Reconstruction metrics per experiment (dashed: chance)")
    if chosen:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no experiments in the table", transform=ax.transAxes, ha="center")
    return _save(fig, path)


# Metrics of the exploration charts (fmri_recon.results.MAIN holds their labels and direction).
CHART_METRICS = ("pixcorr", "ssim", "alexnet2", "inception", "clip", "image_to_brain", "brain_to_image", "caption_meteor")


def _panels(fig, n: int, cols: int = 4):
    rows = math.ceil(n / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def pareto_chart(rows: Sequence[dict], path: str | Path, size_px: tuple[int, int] = (1400, 700)) -> Path:
    """Quality against cost, one panel per main metric: every experiment's final images (its
    metrics.csv row, fmri_recon.results.final_rows) labelled by name, the Pareto front drawn."""
    from .results import MAIN, cost_axis, final_rows, number, pareto_front

    final = final_rows(rows)
    column, label = cost_axis(final)
    fig = _figure(*size_px)
    for ax, metric in zip(_panels(fig, len(CHART_METRICS)), CHART_METRICS):
        name, higher = MAIN[metric]
        pts = [(number(r.get(column)), number(r.get(metric)), r["experiment"]) for r in final]
        pts = [p for p in pts if p[0] is not None and p[1] is not None]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18)
        for x, y, text in pts:
            ax.annotate(text, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        front = pareto_front([(x, y) for x, y, _ in pts], higher)
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red", linewidth=1)
        ax.set_title(name + ("" if higher else " (lower is better)"), fontsize=9)
        ax.set_xlabel(label, fontsize=7)
        ax.tick_params(labelsize=7)
        if not pts:
            ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center")
    fig.suptitle("Quality against cost (red: the Pareto front)", fontsize=11)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    return _save(fig, path)


def learning_curve(groups: Sequence[dict], path: str | Path, size_px: tuple[int, int] = (1400, 700)) -> Path:
    """Each main metric against num_sessions, mean ± sd over seeds, one line per sweep and
    setting of its other keys (the sweeps' groups of fmri_recon.results.sweep_rows whose
    settings have num_sessions; final images' stage)."""
    from .results import MAIN, PREFERRED_STAGES

    lines: dict[str, list[dict]] = {}
    for g in groups:
        settings = dict(kv.split("=", 1) for kv in g["settings"].split())
        if "num_sessions" not in settings or g["stage"] not in PREFERRED_STAGES[:2]:
            continue
        rest = " ".join(f"{k}={v}" for k, v in settings.items() if k != "num_sessions")
        lines.setdefault(f"{g['sweep']} {rest}".strip() + f" ({g['stage']})", []).append({**g, "x": int(settings["num_sessions"])})
    fig = _figure(*size_px)
    sessions = sorted({p["x"] for pts in lines.values() for p in pts})
    for ax, metric in zip(_panels(fig, len(CHART_METRICS)), CHART_METRICS):
        ax.set_xticks(sessions)
        for name, pts in lines.items():
            pts = sorted((p for p in pts if p[f"{metric}_mean"] is not None), key=lambda p: p["x"])
            ax.errorbar([p["x"] for p in pts], [p[f"{metric}_mean"] for p in pts],
                        yerr=[p[f"{metric}_sd"] or 0 for p in pts], marker="o", capsize=3, label=name)
        ax.set_title(MAIN[metric][0], fontsize=9)
        ax.set_xlabel("sessions of training data", fontsize=7)
        ax.tick_params(labelsize=7)
    if lines:
        fig.axes[0].legend(fontsize=6, frameon=False)
    else:
        fig.text(0.5, 0.5, "no sweep varies num_sessions (config key sweeps.<name>.grid.num_sessions)",
                 ha="center", fontsize=12)
    fig.suptitle("Learning curve: mean ± sd over seeds", fontsize=11)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    return _save(fig, path)
