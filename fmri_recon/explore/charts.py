"""Charts of the comparison: the metrics table's bars, the quality-cost Pareto panels, the learning curves.

Drawn like the grids (evaluate.figures): matplotlib's Agg backend, a fixed pixel size, written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from fmri_recon.evaluate.figures import new_figure, save_png

__all__ = ["BAR_METRICS", "learning_curve", "metrics_bar_chart", "pareto_chart"]

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



def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def metrics_bar_chart(table_csv: str | Path, path: str | Path, size_px: tuple[int, int] = (1000, 450)) -> Path:
    """Grouped bars of the main metrics (:data:`BAR_METRICS`), one bar per experiment.

    Each experiment is shown at its most refined stage present (fmri_recon.explore.results.final_rows:
    enhanced, else recon, else blurry).  Dashed lines mark chance where it is defined (0.5 for two-way identification,
    0 for PixCorr, 1/draw size for retrieval).  Missing values leave a gap.
    """
    import numpy as np

    from fmri_recon.explore.results import final_rows
    from fmri_recon.evaluate.tables import read_table

    chosen = {row["experiment"]: row for row in final_rows(read_table(table_csv))}
    fig = new_figure(*size_px)
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
    return save_png(fig, path)


# Metrics of the exploration charts (fmri_recon.explore.results.MAIN holds their labels and direction).
CHART_METRICS = ("pixcorr", "ssim", "alexnet2", "inception", "clip", "image_to_brain", "brain_to_image", "caption_meteor")


def _panels(fig, n: int, cols: int = 4):
    rows = math.ceil(n / cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def pareto_chart(rows: Sequence[dict], path: str | Path, size_px: tuple[int, int] = (1400, 700)) -> Path:
    """Quality against cost, one panel per main metric: every experiment's final images (its
    metrics.csv row, fmri_recon.explore.results.final_rows) labelled by name, the Pareto front drawn."""
    from fmri_recon.explore.results import MAIN, cost_axis, final_rows, number, pareto_front

    final = final_rows(rows)
    column, label = cost_axis(final)
    fig = new_figure(*size_px)
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
    return save_png(fig, path)


def learning_curve(groups: Sequence[dict], path: str | Path, size_px: tuple[int, int] = (1400, 700)) -> Path:
    """Each main metric against num_sessions, mean ± sd over seeds, one line per sweep and
    setting of its other keys (the sweeps' groups of fmri_recon.explore.results.sweep_rows whose
    settings have num_sessions; final images' stage)."""
    from fmri_recon.explore.results import MAIN, PREFERRED_STAGES

    lines: dict[str, list[dict]] = {}
    for g in groups:
        settings = dict(kv.split("=", 1) for kv in g["settings"].split())
        if "num_sessions" not in settings or g["stage"] not in PREFERRED_STAGES[:2]:
            continue
        rest = " ".join(f"{k}={v}" for k, v in settings.items() if k != "num_sessions")
        lines.setdefault(f"{g['sweep']} {rest}".strip() + f" ({g['stage']})", []).append({**g, "x": int(settings["num_sessions"])})
    fig = new_figure(*size_px)
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
    return save_png(fig, path)
