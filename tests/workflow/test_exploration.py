"""tests/support/demo_more.yaml's sweep through the DAG: seed groups, cost per stage, charts and the results page."""
import csv
import json
import statistics

import pytest

from conftest import DEMO_TEST_IMAGES as N
from fmri_recon.evaluate import tables
from fmri_recon.explore import costs

pytestmark = pytest.mark.e2e
GROUPS = {"vitb32_num_sessions~1": ["seed_vitb32", "vitb32_num_sessions~1_seed~7"],
          "vitb32_num_sessions~2": ["vitb32_num_sessions~2_seed~42", "vitb32_num_sessions~2_seed~7"]}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_groups_give_mean_and_spread_over_seeds(demo_more_run):
    rows = {(r["experiment"], r["stage"]): r for r in tables.read_table(demo_more_run / "tables/metrics.csv")}
    groups = read_csv(demo_more_run / "tables/sweeps.csv")
    assert sorted((g["group"], g["stage"]) for g in groups) == sorted(
        (g, s) for g in GROUPS for s in ("recon", "enhanced"))
    for g in groups:
        members = GROUPS[g["group"]]
        assert g["experiments"].split() == members and g["n_seeds"] == "2" and g["n_test_images"] == str(N)
        for metric in ("pixcorr", "ssim", "clip", "image_to_brain"):
            values = [float(rows[(m, g["stage"])][metric]) for m in members]
            intervals = [float(rows[(m, g["stage"])][f"{metric}_ci95"]) for m in members]
            assert float(g[f"{metric}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(g[f"{metric}_sd"]) == pytest.approx(statistics.stdev(values))
            assert float(g[f"{metric}_ci95"]) == pytest.approx(statistics.fmean(intervals))
        for metric in ("pixcorr", "ssim", "clip"):                          # bootstrap over the test images
            assert float(g[f"{metric}_ci95"]) > 0
    for group, members in GROUPS.items():                                   # each point trained as named
        for name in members:
            stats = json.loads((demo_more_run / f"train_logs/{name}/train_stats.json").read_text())
            assert stats["experiment_data"]["num_sessions"] == int(group[-1]), name


def test_every_row_says_what_each_of_its_stages_cost(demo_more_run):
    rows = tables.read_table(demo_more_run / "tables/metrics.csv")
    for r in rows:
        name = r["experiment"]
        stages = {"evaluate": "evaluate", "reconstruct": "reconstruct"}
        if r["stage"] != "upper_bound":
            stages.update(train="train", refine="refine")
        total = 0.0
        for stage, folder in stages.items():
            wall = costs.read_benchmark(demo_more_run / f"benchmarks/{folder}/{name}.tsv")["s"]
            assert float(r[f"cost_{stage}_wall_s"]) == pytest.approx(wall), (name, stage)
            total += wall
        if name == "blurry_bigG":
            total += float(r["cost_blurry_wall_s"])
        assert float(r["cost_total_wall_s"]) == pytest.approx(total), name
        assert float(r["cost_total_gpu_hours"]) == 0 and r["cost_total_gpu_peak_mb"] == ""   # the demo runs on the CPU
        assert float(r["cost_total_max_rss_mb"]) > 100
        if r["stage"] == "upper_bound":
            assert r["cost_train_wall_s"] == ""


def test_results_page_is_generated_from_the_tables(demo_more_run):
    page = (demo_more_run / "tables/results.md").read_text()
    rows = tables.read_table(demo_more_run / "tables/metrics.csv")
    for r in rows:
        assert f"| {r['experiment']} | {r['stage']} | {N} |" in page
    seed = next(r for r in rows if (r["experiment"], r["stage"]) == ("seed_vitb32", "enhanced"))
    assert f"{float(seed['pixcorr']):.3f} ± {float(seed['pixcorr_ci95']):.3f}" in page
    assert f"| vitb32 | num_sessions=2 | enhanced | 2 | {N} |" in page
    for png in ("pareto.png", "learning_curve.png", "metrics.png"):
        assert f"]({png})" in page and (demo_more_run / "tables" / png).read_bytes()[:4] == b"\x89PNG"
