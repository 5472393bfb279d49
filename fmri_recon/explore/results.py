"""From tables/metrics.csv to what people look at: each sweep's seed groups with mean, spread
and confidence intervals (tables/sweeps.csv) and the results page (tables/results.md).

A group is the points of a sweep that differ only in their seed (fmri_recon.sweeps). Its mean
and sample standard deviation are over seeds; ``_ci95`` is the mean over seeds of each one's own
95% half-width (image metrics: bootstrap over test images; retrieval: over draws), so the
table tells the spread between trainings apart from the uncertainty of one evaluation.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from fmri_recon import sweeps as sweep_points
from fmri_recon.evaluate.tables import COST_STAGES

# Metrics aggregated over seeds and shown on the page: column -> (label, higher is better).
MAIN = {
    "pixcorr": ("PixCorr", True), "ssim": ("SSIM", True), "alexnet2": ("Alex(2)", True),
    "alexnet5": ("Alex(5)", True), "inception": ("Incep", True), "clip": ("CLIP", True),
    "efficientnet": ("Eff", False), "swav": ("SwAV", False), "image_to_brain": ("Image retr.", True),
    "brain_to_image": ("Brain retr.", True), "caption_meteor": ("METEOR", True),
}
COSTS = ("cost_total_wall_s", "cost_total_gpu_hours", "cost_total_gpu_peak_mb", "cost_total_max_rss_mb")
SWEEP_COLUMNS = {
    "sweep": "sweep name (config `sweeps.<name>`)",
    "group": "the points of the sweep that differ only in seed (named like a point, without seed)",
    "settings": "the group's grid values, key=value",
    "stage": "image set scored (as in metrics.csv)",
    "n_seeds": "trainings (seeds) the group's numbers rest on",
    "seeds": "their seeds",
    "experiments": "their experiment names (rows of metrics.csv)",
    "n_test_images": "test images each seed's numbers rest on",
    **{f"{m}_{s}": f"{label}: {what}" for m, (label, _) in MAIN.items() for s, what in (
        ("mean", "mean over seeds"), ("sd", "sample standard deviation over seeds (empty with one seed)"),
        ("ci95", "mean over seeds of the 95% half-width of one evaluation (empty where none is computed)"))},
    **{f"{c}_mean": f"{c.removeprefix('cost_total_')} of all the experiment's stages, mean over seeds" for c in COSTS},
}
PREFERRED_STAGES = ("enhanced", "recon", "blurry")       # an experiment's final images first


def number(cell) -> float | None:
    """A metrics.csv cell as a float (empty or NaN: None)."""
    try:
        x = float(cell)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _mean_sd(values: list) -> tuple[float | None, float | None]:
    xs = [x for x in values if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def group_row(sweep: str, group: str, members: list[dict], rows: dict, stage: str) -> dict:
    """One group's aggregate of ``stage`` over its members' rows ({(experiment, stage): row})."""
    found = [(m, rows[(m["name"], stage)]) for m in members if (m["name"], stage) in rows]
    point = {k: v for k, v in members[0]["point"].items() if k != sweep_points.SEED_KEY}
    out = {"sweep": sweep, "group": group, "settings": " ".join(f"{k}={v}" for k, v in sorted(point.items())),
           "stage": stage, "n_seeds": len(found),
           "seeds": " ".join(str(m["point"].get(sweep_points.SEED_KEY, "")) for m, _ in found).strip(),
           "experiments": " ".join(m["name"] for m, _ in found),
           "n_test_images": " ".join(sorted({r["n_test_images"] for _, r in found}))}
    for metric in MAIN:
        out[f"{metric}_mean"], out[f"{metric}_sd"] = _mean_sd([number(r.get(metric)) for _, r in found])
        out[f"{metric}_ci95"] = _mean_sd([number(r.get(f"{metric}_ci95")) for _, r in found])[0]
    for cost in COSTS:
        out[f"{cost}_mean"] = _mean_sd([number(r.get(cost)) for _, r in found])[0]
    return out


def sweep_rows(rows: Sequence[dict], index: dict) -> list[dict]:
    """Every sweep's groups, one row per stage their experiments were scored on."""
    by_key = {(r["experiment"], r["stage"]): r for r in rows}
    out = []
    for sweep, members in index.items():
        names = {m["name"] for m in members}
        missing = sorted(names - {r["experiment"] for r in rows})
        if missing:
            raise ValueError(f"sweep {sweep}: experiments {missing} have no rows in the metrics table")
        for group, group_members in sweep_points.seed_groups(sweep, members).items():
            stages = dict.fromkeys(r["stage"] for r in rows if r["experiment"] in {m["name"] for m in group_members})
            out += [group_row(sweep, group, group_members, by_key, s) for s in stages]
    return out


def final_rows(rows: Sequence[dict]) -> list[dict]:
    """Per experiment (not the upper bounds) its final images' row: enhanced, else recon, else blurry."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["stage"] not in PREFERRED_STAGES:
            continue
        old = best.get(r["experiment"])
        if old is None or PREFERRED_STAGES.index(r["stage"]) < PREFERRED_STAGES.index(old["stage"]):
            best[r["experiment"]] = r
    return list(best.values())


def cost_axis(rows: Sequence[dict]) -> tuple[str, str]:
    """(column, label) of the cost the charts plot: GPU-hours when any stage used a GPU, else
    wall-clock hours (a CPU run, the demo)."""
    if any((number(r.get("cost_total_gpu_hours")) or 0) > 0 for r in rows):
        return "cost_total_gpu_hours", "GPU-hours (all stages)"
    return "cost_total_wall_s", "wall-clock seconds (all stages, no GPU used)"


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats at lower or equal cost, by cost."""
    front, best = [], None
    for cost, value in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if best is None or (value > best if higher_is_better else value < best):
            front.append((cost, value))
            best = value
    return front


def _fmt(value, ci=None, digits: int = 3) -> str:
    if value is None:
        return ""
    text = f"{value:.{digits}f}"
    return f"{text} ± {ci:.{digits}f}" if ci is not None else text


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(x) + " |" for x in lines]


def experiments_section(rows: Sequence[dict]) -> list[str]:
    metrics = list(MAIN)
    header = ["experiment", "stage", "images"] + [MAIN[m][0] + ("" if MAIN[m][1] else " ↓") for m in metrics]
    lines = [[r["experiment"], r["stage"], r["n_test_images"]]
             + [_fmt(number(r.get(m)), number(r.get(f"{m}_ci95"))) for m in metrics] for r in rows]
    return ["## Every experiment", "", "Mean over the test images ± the half-width of its 95% interval "
            "(image metrics: bootstrap over images; retrieval: over draws). ↓: lower is better.", "",
            *_table(header, lines)]


def sweeps_section(groups: Sequence[dict]) -> list[str]:
    if not groups:
        return ["## Sweeps", "", "The config has no sweeps (config key `sweeps`)."]
    metrics = list(MAIN)
    header = ["sweep", "settings", "stage", "seeds", "images"] + [MAIN[m][0] for m in metrics]
    lines = [[g["sweep"], g["settings"], g["stage"], str(g["n_seeds"]), g["n_test_images"]]
             + [_fmt(g[f"{m}_mean"], g[f"{m}_sd"]) for m in metrics] for g in groups]
    return ["## Sweeps", "", "Mean over seeds ± their sample standard deviation (one seed: no spread); "
            "tables/sweeps.csv also has each number's evaluation interval.", "", *_table(header, lines)]


def cost_section(rows: Sequence[dict]) -> list[str]:
    header = ["experiment"] + [f"{s} s" for s in COST_STAGES] + ["peak RSS MiB", "peak GPU MiB", "GPU-h"]
    lines = []
    for r in final_rows(rows) + [r for r in rows if r["stage"] == "upper_bound"]:
        walls = [_fmt(number(r.get(f"cost_{s}_wall_s")), digits=0) for s in COST_STAGES]
        lines.append([r["experiment"], *walls, _fmt(number(r.get("cost_total_max_rss_mb")), digits=0),
                      _fmt(number(r.get("cost_total_gpu_peak_mb")), digits=0),
                      _fmt(number(r.get("cost_total_gpu_hours")), digits=3)])
    return ["## Cost per stage", "", "From Snakemake's benchmark files and each stage's log; empty: the stage "
            "did not run for that experiment, or used no GPU.", "", *_table(header, lines)]


def subject_section(rows: Sequence[dict]) -> list[str]:
    metrics = list(MAIN)
    by_exp: dict[str, list[dict]] = {}
    for r in final_rows(rows):
        by_exp.setdefault(r["experiment"], []).append(r)
    lines = []
    for name, rs in by_exp.items():
        lines += [[name, str(r.get("subject", ""))] + [_fmt(number(r.get(m))) for m in metrics] for r in rs]
        lines.append([name, f"mean of {len(rs)}"] + [_fmt(_mean_sd([number(r.get(m)) for r in rs])[0]) for m in metrics])
    return ["## Per subject", "", "Each experiment's final images per subject scored, and their mean.", "",
            *_table(["experiment", "subject"] + [MAIN[m][0] for m in metrics], lines)]


def page(rows: Sequence[dict], groups: Sequence[dict], pictures: dict[str, str]) -> str:
    """The results page (Markdown): generated from the tables, never written by hand."""
    figures = [f"![{title}]({path})" for title, path in pictures.items()]
    parts = ["# Results", "", "Generated by rule `results` from `tables/metrics.csv` and `tables/sweeps.csv`; "
             "column meanings: `fmri_recon/evaluate/tables.py` (COLUMNS) and `fmri_recon/explore/results.py` (SWEEP_COLUMNS).", "", *figures, "",
             *experiments_section(rows), "", *sweeps_section(groups), "", *cost_section(rows), "",
             *subject_section(rows), ""]
    return "\n".join(parts)

