"""The metrics table: one row per experiment and stage, as flat CSV (``tables/metrics.csv``).

Each experiment's evaluation writes its rows with :func:`experiment_rows` + :func:`write_table`;
:func:`merge_tables` joins them.  :data:`COLUMNS` is the data dictionary (name -> meaning), in
the column order of every file; it is written so that it can be pasted into the README.

Stages (:data:`STAGES`) are the image sets scored.  Metrics of the brain model itself rather
than of an image set (retrieval, predicted captions, training cost) are the same for every
stage of an experiment and are repeated on each of its rows, except ``upper_bound``, which does
not use the brain and leaves them empty.  Empty cells mean "not computed / not applicable".
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "COST_STAGES", "STAGES", "experiment_rows", "merge_tables", "merged_rows", "read_table", "write_table"]

STAGES = {
    "recon": "unrefined reconstructions (unCLIP decode of the predicted CLIP tokens)",
    "enhanced": "refined reconstructions (blended 0.75/0.25 with the blurry ones, as upstream scores them, "
                "only when the blurry branch exists)",
    "blurry": "low-level (blurry) reconstructions only",
    "upper_bound": "ground-truth CLIP tokens through the same decoder: what a perfect brain model would give",
}

_IMAGE = {
    "pixcorr": "PixCorr: Pearson r of RGB pixels at 425x425, mean over images (higher is better)",
    "ssim": "SSIM of grayscale images at 425x425, mean over images (higher is better)",
    "alexnet2": "two-way identification with AlexNet features.4 (fraction; chance 0.5)",
    "alexnet5": "two-way identification with AlexNet features.11 (fraction; chance 0.5)",
    "inception": "two-way identification with InceptionV3 avgpool (fraction; chance 0.5)",
    "clip": "two-way identification with CLIP ViT-L/14 image embeddings (fraction; chance 0.5)",
    "efficientnet": "EfficientNet-B1 avgpool correlation distance, mean over images (lower is better)",
    "swav": "SwAV ResNet-50 avgpool correlation distance, mean over images (lower is better)",
}
_CAPTION = {
    "meteor": "METEOR (nltk, as HF evaluate), mean over images",
    "rouge1": "ROUGE-1 F-measure (rouge-score), mean over images",
    "rougeL": "ROUGE-L F-measure (rouge-score), mean over images",
    "sentence": "cosine of all-MiniLM-L6-v2 sentence embeddings, mean over images",
    "clip_text": "cosine of CLIP text features, mean over images",
}
_IMAGE_CI = {f"{k}_ci95": f"half-width of the 95% percentile bootstrap interval of {k} over the test images "
                            "(2000 resamples, metrics.image.bootstrap_ci95)" for k in _IMAGE}
# Cost of each stage of an experiment's row (fmri_recon.explore.costs), and their total.
COST_STAGES = ("train", "reconstruct", "blurry", "refine", "evaluate", "total")
COST_FIELDS = {
    "wall_s": "wall-clock seconds (Snakemake's benchmark file, `s`)",
    "max_rss_mb": "peak host memory, MiB (benchmark `max_rss`; total: the largest stage's)",
    "gpu_peak_mb": "peak GPU memory allocated, MiB (the stage's log; empty: it used no GPU; total: the largest)",
    "gpu_hours": "GPU-hours: wall time x GPUs the job held (0 on the CPU)",
}
_REGIONS = ("nsd_general", "V1", "V2", "V3", "V4", "higher_vis")   # = metrics.brain.REGIONS

COLUMNS: dict[str, str] = {
    "experiment": "experiment name (config `experiments.<name>`)",
    "stage": "image set scored: " + "; ".join(f"`{k}` {v}" for k, v in STAGES.items()),
    "subject": "NSD subject whose test set is scored",
    "n_test_images": "number of test images scored",
    "image_to_brain": "top-1 retrieval accuracy, image -> its brain embedding among the draw "
                      "(upstream 'fwd', the paper's **Image retrieval**; fraction, mean over draws)",
    "image_to_brain_ci95": "half-width of the 95% normal interval of image_to_brain over draws",
    "brain_to_image": "top-1 retrieval accuracy, brain embedding -> its image among the draw "
                      "(upstream 'bwd', the paper's **Brain retrieval**; fraction, mean over draws)",
    "brain_to_image_ci95": "half-width of the 95% normal interval of brain_to_image over draws",
    "retrieval_draw_size": "candidates per retrieval draw (paper: 300); chance = 1 / draw size",
    **_IMAGE,
    **_IMAGE_CI,
    **{f"caption_{k}": f"captions predicted from the brain (upper_bound: from the ground-truth tokens) vs COCO captions: {v}" for k, v in _CAPTION.items()},
    **{f"caption_{k}_relative": f"{k} of brain vs GIT captions / {k} of GIT vs COCO captions (upstream 'relative')"
       for k in _CAPTION},
    **{f"brain_corr_{r}": f"brain correlation in {r}: GNet8-predicted responses to the images vs measured "
                          "responses, Pearson r across the region's voxels, mean over images" for r in _REGIONS},
    "notes": "what this row does not report, and why (e.g. brain correlation without region masks)",
    "train_wall_time_s": "training wall-clock time of the brain model (seconds)",
    "train_peak_memory_mb": "peak memory while training (MiB; GPU allocated on CUDA, max RSS on CPU)",
    "params_total": "trainable parameters of the brain model (ridge + backbone + prior)",
    **{f"cost_{stage}_{field}": f"{stage}: {meaning}" for stage in COST_STAGES for field, meaning in COST_FIELDS.items()},
}

def _get(d: Mapping[str, Any], *keys: str) -> Any:
    """``d[k1][k2]...``, or None when any level is missing."""
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def experiment_rows(experiment: str, *, n_test_images: int, subject: int | None = None, image: Mapping[str, Mapping[str, float]],
                    retrieval: Mapping[str, Any] | None = None, captions: Mapping[str, float] | None = None,
                    captions_relative: Mapping[str, float] | None = None,
                    brain: Mapping[str, Mapping[str, float]] | None = None,
                    train_stats: Mapping[str, Any] | None = None, notes: str | None = None) -> list[dict[str, Any]]:
    """Rows of one experiment, one per stage present in ``image`` or ``brain`` (in :data:`STAGES` order).

    * ``image``: stage -> :func:`fmri_recon.evaluate.metrics.feature_nets.image_metrics` result;
    * ``brain``: stage -> :func:`fmri_recon.evaluate.metrics.brain.brain_correlation` result;
    * ``retrieval``: :func:`fmri_recon.evaluate.metrics.retrieval.retrieval` result;
    * ``captions``: :func:`fmri_recon.evaluate.metrics.captions.caption_metrics` of brain vs COCO captions;
    * ``captions_relative``: :func:`fmri_recon.evaluate.metrics.captions.relative` result;
    * ``train_stats``: the training's ``train_stats.json`` (``wall_time_s``, ``peak_memory_mb``,
      ``params.total``);
    * ``notes``: said on every row (what is missing and why).
    """
    brain = brain or {}
    stages = [s for s in STAGES if s in image or s in brain]
    unknown = (set(image) | set(brain)) - set(STAGES)
    if unknown:
        raise ValueError(f"experiment_rows: unknown stage(s) {sorted(unknown)}; expected some of {list(STAGES)}")

    model: dict[str, Any] = {}
    text: dict[str, Any] = {}      # captions: of the brain's tokens, or of the ground truth's (upper bound)
    if retrieval:
        for key in ("image_to_brain", "image_to_brain_ci95", "brain_to_image", "brain_to_image_ci95"):
            model[key] = retrieval.get(key)
        model["retrieval_draw_size"] = retrieval.get("draw_size")
    for key, value in (captions or {}).items():
        text[f"caption_{key}"] = value
    for key, value in (captions_relative or {}).items():
        text[f"caption_{key}_relative"] = value
    if train_stats:
        model["train_wall_time_s"] = train_stats.get("wall_time_s")
        model["train_peak_memory_mb"] = train_stats.get("peak_memory_mb")
        model["params_total"] = _get(train_stats, "params", "total")

    rows = []
    for stage in stages:
        row: dict[str, Any] = {"experiment": experiment, "stage": stage, "subject": subject,
                               "n_test_images": int(n_test_images)}
        if stage != "upper_bound":
            row.update(model)
        row.update(text)
        row.update({k: v for k, v in (image.get(stage) or {}).items() if k in _IMAGE or k in _IMAGE_CI})
        row.update({f"brain_corr_{r}": v for r, v in (brain.get(stage) or {}).items()})
        row["notes"] = notes
        rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)     # repr: the shortest exact round trip
    if hasattr(value, "item"):                               # numpy / torch scalars
        return _cell(value.item())
    return str(value)


def write_table(rows: Iterable[Mapping[str, Any]], path: str | Path,
                columns: Mapping[str, str] = COLUMNS) -> Path:
    """Write ``rows`` as CSV with the ``columns`` (default :data:`COLUMNS`, in that order), atomically.

    A key that is not a known column is an error (a misspelt metric would otherwise vanish).
    """
    from fmri_recon.helpers import atomic_output

    rows = list(rows)
    for row in rows:
        extra = set(row) - set(columns)
        if extra:
            raise ValueError(f"write_table: unknown column(s) {sorted(extra)} in the row of "
                             f"{row.get('experiment')}/{row.get('stage')}")
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
    return Path(path)


def read_table(path: str | Path) -> list[dict[str, str]]:
    """Rows of a metrics CSV as dicts of strings (empty cells are ``""``)."""
    path = Path(path)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        unknown = set(reader.fieldnames or []) - set(COLUMNS)
        if unknown:
            raise ValueError(f"{path}: unknown column(s) {sorted(unknown)}")
        return list(reader)


def merge_tables(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Concatenate per-experiment tables into ``out`` (rows in the order given)."""
    return write_table(merged_rows(paths), out)


def merged_rows(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """The rows of per-experiment tables, in the order given.

    The same (experiment, stage) twice is an error: two evaluations claiming one row.
    """
    rows, seen = [], {}
    for path in paths:
        for row in read_table(path):
            key = (row["experiment"], row["stage"])
            if key in seen:
                raise ValueError(f"merge_tables: {key[0]}/{key[1]} is in both {seen[key]} and {path}")
            seen[key] = path
            rows.append(row)
    return rows
