"""The metrics table (columns, rows, merge) and the evaluation figures."""

import csv
import math

import pytest
import torch

from fmri_recon.evaluate import figures, tables
from fmri_recon.explore import charts

IMAGE = {"pixcorr": 0.2, "ssim": 0.4, "alexnet2": 0.8, "alexnet5": 0.9, "inception": 0.7, "clip": 0.75,
         "efficientnet": 0.85, "swav": 0.5}
RETRIEVAL = {"image_to_brain": 0.6, "brain_to_image": 0.4, "image_to_brain_ci95": 0.02,
             "brain_to_image_ci95": 0.03, "draw_size": 50, "n_draws": 30, "chance": 0.02}
CAPTIONS = {"meteor": 0.2, "rouge1": 0.3, "rougeL": 0.28, "sentence": 0.4, "clip_text": float("nan")}
BRAIN = {"nsd_general": 0.3, "V1": 0.25, "V2": 0.2, "V3": 0.2, "V4": 0.1, "higher_vis": 0.35}
STATS = {"wall_time_s": 61.5, "peak_memory_mb": 812.0, "params": {"total": 123456, "ridge": 1}}


def rows_of(name, stages=("recon", "enhanced", "blurry", "upper_bound")):
    return tables.experiment_rows(
        name, n_test_images=50, image={s: IMAGE for s in stages}, retrieval=RETRIEVAL, captions=CAPTIONS,
        captions_relative={"meteor": 0.8}, brain={s: BRAIN for s in stages}, train_stats=STATS)


def read(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_columns_present_and_ordered(tmp_path):
    names = list(tables.COLUMNS)
    assert names[:4] == ["experiment", "stage", "subject", "n_test_images"]
    order = ["image_to_brain", "brain_to_image", "retrieval_draw_size", "pixcorr", "ssim", "alexnet2", "alexnet5",
             "inception", "clip", "efficientnet", "swav", "caption_meteor", "caption_rouge1", "caption_rougeL",
             "caption_sentence", "caption_clip_text", "brain_corr_nsd_general", "brain_corr_higher_vis",
             "train_wall_time_s", "train_peak_memory_mb", "params_total"]
    assert [n for n in names if n in order] == order
    cost = [f"cost_{s}_{f}" for s in tables.COST_STAGES for f in tables.COST_FIELDS]
    assert names[-3 - len(cost):] == ["train_wall_time_s", "train_peak_memory_mb", "params_total", *cost]
    assert names.index("pixcorr_ci95") > names.index("swav")
    assert all(isinstance(d, str) and d for d in tables.COLUMNS.values())
    assert "Image retrieval" in tables.COLUMNS["image_to_brain"]
    assert "Brain retrieval" in tables.COLUMNS["brain_to_image"]

    path = tables.write_table(rows_of("a"), tmp_path / "a.csv")
    header, *body = read(path)
    assert header == names
    assert [r[1] for r in body] == ["recon", "enhanced", "blurry", "upper_bound"]
    rec = dict(zip(header, body[0]))
    assert float(rec["image_to_brain"]) == 0.6 and rec["retrieval_draw_size"] == "50"
    assert float(rec["brain_corr_V1"]) == 0.25 and float(rec["caption_meteor_relative"]) == 0.8
    assert rec["caption_clip_text"] == ""                       # NaN: not computed
    assert rec["params_total"] == "123456" and float(rec["train_wall_time_s"]) == 61.5
    upper = dict(zip(header, body[3]))
    assert upper["image_to_brain"] == "" and upper["params_total"] == ""   # not a brain-model output
    assert float(upper["pixcorr"]) == 0.2


def test_unknown_stage_or_column_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        tables.experiment_rows("a", n_test_images=1, image={"refined": IMAGE})
    with pytest.raises(ValueError, match="unknown column"):
        tables.write_table([{"experiment": "a", "stage": "recon", "pixcor": 0.1}], tmp_path / "x.csv")


def test_merge_keeps_rows_of_all_experiments(tmp_path):
    a = tables.write_table(rows_of("one_session"), tmp_path / "a.csv")
    b = tables.write_table(rows_of("forty_sessions", stages=("recon", "blurry")), tmp_path / "b.csv")
    out = tables.merge_tables([a, b], tmp_path / "tables" / "metrics.csv")
    header, *body = read(out)
    assert header == list(tables.COLUMNS)
    assert [(r[0], r[1]) for r in body] == [("one_session", s) for s in ("recon", "enhanced", "blurry", "upper_bound")] \
        + [("forty_sessions", "recon"), ("forty_sessions", "blurry")]
    assert read(a)[1] == body[0]                                # values pass through unchanged
    with pytest.raises(ValueError, match="one_session/recon is in both"):
        tables.merge_tables([a, a], tmp_path / "dup.csv")
    assert not (tmp_path / "dup.csv").exists()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_bar_chart_is_a_png_of_the_expected_size(tmp_path):
    a = tables.write_table(rows_of("one_session"), tmp_path / "a.csv")
    b = tables.write_table(rows_of("no_refine", stages=("recon",)), tmp_path / "b.csv")
    merged = tables.merge_tables([a, b], tmp_path / "metrics.csv")
    out = charts.metrics_bar_chart(merged, tmp_path / "bars.png")
    assert png_size(out) == (1000, 450)
    from PIL import Image
    with Image.open(out) as im:
        im.verify()


def test_grid_png_size_and_content(tmp_path):
    g = torch.Generator().manual_seed(0)
    gt, recon, enh = (torch.rand(5, 3, 32, 32, generator=g) for _ in range(3))
    caps = ["a man riding a horse on a sandy beach at sunset, seen from far away"] * 5
    out = figures.grid_png([("ground truth", gt), ("recon", recon), ("enhanced", enh)], caps, tmp_path / "grid.png", n=4)
    assert png_size(out) == figures.grid_size(4) == (3 * 128 + 256, 4 * 128 + 24)
    out2 = figures.grid_png([("ground truth", gt), ("recon", recon)], None, tmp_path / "grid2.png", n=8)   # n capped at 5
    assert png_size(out2) == figures.grid_size(5, n_columns=2, with_captions=False)
    small = figures.grid_png([("a", gt)] * 7, caps, tmp_path / "grid3.png", n=3, cell_px=64)
    assert png_size(small) == (7 * 64 + 256, 3 * 64 + 24)
    from PIL import Image
    import numpy as np
    with Image.open(out) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10                                   # images were drawn, not a blank page
    assert not math.isnan(float(pixels.mean()))


def test_region_columns_follow_the_masks_file():
    from fmri_recon.evaluate.metrics.brain import REGIONS

    assert [c[len("brain_corr_"):] for c in tables.COLUMNS if c.startswith("brain_corr_")] == list(REGIONS)


def test_absent_masks_or_gnet_leave_brain_correlation_empty_with_a_note(tmp_path):
    from fmri_recon.evaluate import score

    ev = {"masks": "brain_region_masks.hdf5", "gnet": "data:gnet_multisubject.pt"}
    assert score.missing_brain_inputs(ev, ["masks", "gnet", "recons"]) is None
    assert score.missing_brain_inputs({**ev, "gnet": "random"}, ["masks"]) is None
    note = score.missing_brain_inputs(ev, ["recons"])
    assert note.startswith("brain correlation not computed: brain_region_masks.hdf5 and gnet_multisubject.pt not in "
                           "data_dir (download: false), or the voxels are of another ROI")
    rows = tables.experiment_rows("x", n_test_images=3, image={"recon": {"pixcorr": 0.1}}, notes=note)
    tables.write_table(rows, tmp_path / "t.csv")
    (row,) = tables.read_table(tmp_path / "t.csv")
    assert row["notes"] == note and row["brain_corr_nsd_general"] == "" and row["pixcorr"] == "0.1"
