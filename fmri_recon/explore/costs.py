"""What each stage of an experiment cost: wall time and peak host memory from Snakemake's
benchmark files, peak GPU memory from the stage's own log (fmri_recon.runlog), GPU-hours from
both and the GPUs the job held. Added to every row of tables/metrics.csv (tables.COST_STAGES)."""
from __future__ import annotations

import csv
from pathlib import Path

from fmri_recon import runlog
from fmri_recon.evaluate.tables import COST_STAGES


def read_benchmark(path: str | Path) -> dict:
    """{"s", "max_rss"} of a Snakemake benchmark file (its last repeat); a value it could not
    measure (a very short job: "NA" or "-") is None."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[-1]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (expected a header with 's' and a row)")

    def number(key):
        try:
            return float(rows[-1].get(key))
        except (TypeError, ValueError):
            return None
    return {"s": number("s"), "max_rss": number("max_rss")}


def stage_cost(benchmark: str | Path, log: str | Path, gpus: int) -> dict:
    """One stage's cost; GPU-hours count only when its log says it used CUDA."""
    bench = read_benchmark(benchmark)
    peak = runlog.peak_gpu_mb(log)
    hours = 0.0 if peak is None or bench["s"] is None else bench["s"] * gpus / 3600
    return {"wall_s": bench["s"], "max_rss_mb": bench["max_rss"], "gpu_peak_mb": peak, "gpu_hours": hours}


def _total(costs: list[dict], key: str, how):
    values = [c[key] for c in costs if c[key] is not None]
    return how(values) if values else None


def experiment_costs(spec: dict) -> dict:
    """``cost_<stage>_<field>`` cells of one experiment from ``spec``: {stage: {"benchmark", "log",
    "gpus"}} of the stages it ran; the total sums times and takes the largest memory."""
    unknown = set(spec) - set(COST_STAGES[:-1])
    if unknown:
        raise ValueError(f"experiment_costs: unknown stage(s) {sorted(unknown)}; expected some of {COST_STAGES[:-1]}")
    per = {stage: stage_cost(**files) for stage, files in spec.items()}
    costs = list(per.values())
    per["total"] = {"wall_s": _total(costs, "wall_s", sum), "max_rss_mb": _total(costs, "max_rss_mb", max),
                    "gpu_peak_mb": _total(costs, "gpu_peak_mb", max), "gpu_hours": _total(costs, "gpu_hours", sum)}
    return {f"cost_{stage}_{k}": v for stage, c in per.items() for k, v in c.items()}


def add_costs(rows: list[dict], specs: dict) -> list[dict]:
    """``rows`` (read_table's) with each experiment's cost cells; an experiment without a spec is an error."""
    missing = sorted({r["experiment"] for r in rows} - set(specs))
    if missing:
        raise ValueError(f"add_costs: no cost spec for {missing}")
    cells = {name: experiment_costs(spec) for name, spec in specs.items()}
    return [{**row, **cells[row["experiment"]]} for row in rows]
