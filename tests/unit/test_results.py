"""Cost per stage, seed groups, the Pareto front and the results page, on hand-made tables."""
import math

import pytest

from fmri_recon import runlog
from fmri_recon.evaluate import tables
from fmri_recon.explore import charts, costs, results

BENCH = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def job(tmp_path, name, seconds, rss, gpu_line=None, gpus=1):
    bench, log = tmp_path / f"{name}.tsv", tmp_path / f"{name}.log"
    bench.write_text(BENCH + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t0\t1\n")
    log.write_text("2026 INFO fmri_recon: working\n" + (f"2026 INFO fmri_recon: {runlog.PEAK_GPU}: {gpu_line} MiB\n"
                                                         if gpu_line is not None else ""))
    return {"benchmark": str(bench), "log": str(log), "gpus": gpus}


def test_costs_of_each_stage_and_their_total(tmp_path):
    spec = {"train": job(tmp_path, "train", 3600, 900, gpu_line=5000, gpus=2),
            "reconstruct": job(tmp_path, "rec", 1800, 1200, gpu_line=7000),
            "evaluate": job(tmp_path, "ev", 60, "NA")}                       # on the CPU, RSS not measured
    cells = costs.experiment_costs(spec)
    assert cells["cost_train_gpu_hours"] == 2.0 and cells["cost_reconstruct_gpu_hours"] == 0.5
    assert cells["cost_evaluate_gpu_hours"] == 0.0 and cells["cost_evaluate_gpu_peak_mb"] is None
    assert cells["cost_evaluate_max_rss_mb"] is None
    assert cells["cost_total_wall_s"] == 5460 and cells["cost_total_gpu_hours"] == 2.5
    assert cells["cost_total_max_rss_mb"] == 1200 and cells["cost_total_gpu_peak_mb"] == 7000
    assert set(cells) <= set(tables.COLUMNS)
    with pytest.raises(ValueError, match="unknown stage"):
        costs.experiment_costs({"trian": spec["train"]})


def test_peak_gpu_is_the_largest_of_the_processes_lines(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(f"a {runlog.PEAK_GPU}: 10 MiB\nb {runlog.PEAK_GPU}: 30 MiB\nc {runlog.PEAK_GPU}: 20 MiB\n")
    assert runlog.peak_gpu_mb(log) == 30 and runlog.peak_gpu_mb(tmp_path / "absent.log") is None


def row(name, stage, seed_value, **metrics):
    return {"experiment": name, "stage": stage, "n_test_images": "50", **{k: str(v) for k, v in metrics.items()}}


def test_a_seed_group_gives_mean_sample_sd_and_mean_interval():
    index = {"s": [{"name": "a", "point": {"n": 1, "seed": 1}}, {"name": "b", "point": {"n": 1, "seed": 2}},
                   {"name": "c", "point": {"n": 2, "seed": 1}}]}
    rows = [row("a", "recon", 1, pixcorr=0.1, pixcorr_ci95=0.02, cost_total_wall_s=10),
            row("b", "recon", 2, pixcorr=0.3, pixcorr_ci95=0.04, cost_total_wall_s=30),
            row("c", "recon", 1, pixcorr=0.5, pixcorr_ci95=0.01, cost_total_wall_s=50)]
    groups = results.sweep_rows(rows, index)
    one, two = groups
    assert (one["group"], one["settings"], one["n_seeds"], one["seeds"]) == ("s_n~1", "n=1", 2, "1 2")
    assert one["pixcorr_mean"] == pytest.approx(0.2) and one["pixcorr_sd"] == pytest.approx(math.sqrt(0.02))
    assert one["pixcorr_ci95"] == pytest.approx(0.03) and one["cost_total_wall_s_mean"] == 20
    assert two["n_seeds"] == 1 and two["pixcorr_sd"] is None and two["pixcorr_mean"] == 0.5
    with pytest.raises(ValueError, match=r"experiments \['c'\] have no rows"):
        results.sweep_rows(rows[:2], index)


def test_pareto_front_keeps_only_points_nothing_cheaper_beats():
    pts = [(1, 0.2), (2, 0.1), (3, 0.5), (4, 0.4), (5, 0.6)]
    assert results.pareto_front(pts, higher_is_better=True) == [(1, 0.2), (3, 0.5), (5, 0.6)]
    assert results.pareto_front(pts, higher_is_better=False) == [(1, 0.2), (2, 0.1)]


def test_page_and_charts_are_made_from_the_rows(tmp_path):
    rows = [row("a", "recon", 1, pixcorr=0.123, pixcorr_ci95=0.045, cost_total_wall_s=10, subject=1),
            row("a", "enhanced", 1, pixcorr=0.2, cost_total_wall_s=10, subject=1),
            row("upper_bound_x", "upper_bound", 1, pixcorr=0.9)]
    index = {"s": [{"name": "a", "point": {"num_sessions": 1, "seed": 1}}]}
    groups = results.sweep_rows(rows, index)
    text = results.page(rows, groups, {"Pareto": "pareto.png"})
    assert "0.123 ± 0.045" in text and "![Pareto](pareto.png)" in text and "| s | num_sessions=1 |" in text
    assert [r["stage"] for r in results.final_rows(rows)] == ["enhanced"]
    for draw in (lambda p: charts.pareto_chart(rows, p), lambda p: charts.learning_curve(groups, p)):
        path = draw(tmp_path / "x.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
