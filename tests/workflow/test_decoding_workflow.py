"""Reconstruct, refine and evaluate in the demo run: files, shapes, ranges, the final table."""
import csv
import json

import numpy as np
import pytest
import torch
import yaml

from conftest import DEMO, DEMO_TEST_IMAGES as N, REPO
from conftest import snakemake
from fmri_recon.data import nsd
from fmri_recon.evaluate import figures

pytestmark = pytest.mark.e2e
EXPERIMENTS = ("lite_bigG", "blurry_bigG")                       # the README demo's
MORE = ("seed_vitb32",)                                          # tests/support/demo_more.yaml's
SWEPT = ("vitb32_num_sessions~1_seed~7", "vitb32_num_sessions~2_seed~42", "vitb32_num_sessions~2_seed~7")  # its sweep
UPPER = ("upper_bound_bigG", "upper_bound_vitb32")
TOKENS = {"bigG": (256, 64), "vitb32": (49, 48)}


def png_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def run_of(request, name):
    """The run that holds ``name``: the README demo's, or the one with tests/support/demo_more.yaml."""
    return request.getfixturevalue("demo_more_run" if "vitb32" in name else "demo_run")


def load(run, name, kind):
    return nsd.load_eval(run / "evals" / name, f"{name}_all_{kind}.pt")


@pytest.mark.parametrize("name", EXPERIMENTS + MORE + UPPER)
def test_reconstruct_writes_upstreams_files(request, name):
    clip = "vitb32" if "vitb32" in name else "bigG"
    run = run_of(request, name)
    recons = load(run, name, "recons")
    assert recons.shape == (N, 3, 256, 256) and recons.dtype == torch.float32
    assert 0 <= recons.min() and recons.max() <= 1 and recons.std() > 0.01
    for kind in ("clipvoxels", "prior_out", "backbones"):
        tokens = load(run, name, kind)
        assert tokens.shape == (N, *TOKENS[clip]) and tokens.dtype == torch.float16 and torch.isfinite(tokens).all()
    captions = load(run, name, "predcaptions")
    assert isinstance(captions, np.ndarray) and len(captions) == N
    assert all(isinstance(c, str) and 1 <= len(c.split()) <= 20 for c in captions)
    assert not list((run / "evals" / name).glob(".progress*"))          # finished: no leftovers


@pytest.mark.parametrize("name", EXPERIMENTS + MORE)
def test_refine_writes_enhanced_reconstructions(request, name):
    run = run_of(request, name)
    enhanced = load(run, name, "enhancedrecons")
    assert enhanced.shape == (N, 3, 256, 256) and 0 <= enhanced.min() and enhanced.max() <= 1
    assert not torch.equal(enhanced, load(run, name, "recons"))


def test_vitb32_predictions_reach_the_decoder_through_a_converter(demo_more_run):
    report = json.loads((demo_more_run / "cache/converters/vitb32_to_bigG.json").read_text())
    assert report["held_out"]["n_images"] == N and report["held_out"]["identification_top1"] > 5 / N
    assert (demo_more_run / "cache/converters/vitb32_to_git.json").exists()       # its own, into GIT's space
    assert not (demo_more_run / "cache/converters/bigG_to_bigG.pt").exists()       # same space: no converter


def test_the_readme_demo_runs_exactly_its_own_experiments(demo_run):
    rows = list(csv.DictReader(open(demo_run / "tables/metrics.csv")))
    assert {(r["experiment"], r["stage"]) for r in rows} == (
        {(e, s) for e in EXPERIMENTS for s in ("recon", "enhanced")} | {("blurry_bigG", "blurry"),
                                                                       ("upper_bound_bigG", "upper_bound")})
    assert not (demo_run / "cache/clip_targets/vitb32.hdf5").exists()     # nothing of tests/support/demo_more.yaml


def test_metrics_table_has_every_experiment_and_stage(demo_run, demo_more_run):
    rows = list(csv.DictReader(open(demo_more_run / "tables/metrics.csv")))
    got = {(r["experiment"], r["stage"]) for r in rows}
    assert got == ({(e, s) for e in MORE + SWEPT for s in ("recon", "enhanced")} | {("upper_bound_vitb32", "upper_bound")})
    for r in rows + list(csv.DictReader(open(demo_run / "tables/metrics.csv"))):
        assert r["n_test_images"] == str(N)                        # two-way identification over all test images
        for key in ("pixcorr", "ssim", "alexnet2", "alexnet5", "inception", "clip", "efficientnet", "swav",
                    "brain_corr_nsd_general"):
            assert r[key] != "" and np.isfinite(float(r[key])), (r["experiment"], key)
        if r["stage"] != "upper_bound":
            chance = 1 / int(r["retrieval_draw_size"])
            assert int(r["retrieval_draw_size"]) == N              # fewer than 300 test images: all of them
            assert float(r["image_to_brain"]) >= 5 * chance and float(r["brain_to_image"]) >= 5 * chance, r
            assert float(r["params_total"]) > 0 and float(r["train_wall_time_s"]) > 0
            assert r["caption_meteor"] != "" and r["caption_sentence"] != ""


def test_pictures_and_report(demo_run):
    run = demo_run
    assert (run / "tables/metrics.png").read_bytes()[:4] == b"\x89PNG"
    # every grid draws each stage its rows score: ground truth, recon (or upper bound), blurry and
    # the refined images, and for the blurry experiment the blend its enhanced row scores
    columns = {"lite_bigG": 3, "blurry_bigG": 5, "upper_bound_bigG": 2}
    for name, n in columns.items():
        assert png_size(run / f"evals/{name}/{name}_grid.png") == figures.grid_size(8, n), name
    # the overview: ground truth, the upper bound, lite (recon, refined), blurry (recon, blurry, refined, blend)
    rows = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())[
        "properties"]["evaluate"]["properties"]["overview_rows"]["default"]
    assert png_size(run / "tables/overview.png") == figures.grid_size(rows, 8, True, figures.SMALL_CELL_PX, 2)
    snakemake(run, "--report", "report.html", configs=(DEMO,))
    html = (run / "report.html").read_text(errors="replace")
    assert "metrics.csv" in html and "loss_curve.png" in html
    for name in ("sweeps.csv", "pareto.png", "learning_curve.png", "results.md"):
        assert name in html, name


def test_blurry_branch_predicts_the_images_latents(demo_run):
    """The demo's voxels encode an 8x8 thumbnail of each image, so the blurry branch can predict the
    low-level content of test images it never saw: its latents identify their image (two-way, chance
    0.5) and their L1 beats the best constant guess (the mean latent of the train images)."""
    import h5py

    blurry = load(demo_run, "blurry_bigG", "blurryrecons")
    assert blurry.shape == (N, 3, 256, 256) and blurry.dtype == torch.float32
    assert 0 <= float(blurry.min()) and float(blurry.max()) <= 1
    assert not (demo_run / "evals/lite_bigG/lite_bigG_all_blurryrecons.pt").exists()   # no branch, no file
    split = nsd.open_split(demo_run / "data", 1, 1)
    with h5py.File(demo_run / "cache/lowlevel_targets.hdf5") as f:
        ids, latents = f["image_ids"][:], f["latents"][:].astype(np.float32)
    test = latents[np.searchsorted(ids, split.test_images)]
    mean_guess = float(np.abs(test - latents[np.searchsorted(ids, np.unique(split.train_images))].mean(0)).mean())
    last = list(csv.DictReader(open(demo_run / "train_logs/blurry_bigG/log.csv")))[-1]
    assert int(last["val_images"]) == N and float(last["val_blur_2way"]) >= 0.7, last
    assert float(last["val_blur_l1"]) < 0.98 * mean_guess, (last, mean_guess)
    assert float(last["train_loss_blur_cont"]) > 0


def test_refined_images_are_scored_blended_with_the_blurry_ones(demo_run):
    rows = {r["stage"]: r for r in csv.DictReader(open(demo_run / "tables/blurry_bigG.csv"))}
    assert set(rows) == {"recon", "enhanced", "blurry"}
    assert rows["blurry"]["pixcorr"] != rows["enhanced"]["pixcorr"] != rows["recon"]["pixcorr"]
    assert rows["blurry"]["image_to_brain"] == rows["recon"]["image_to_brain"]    # a property of the brain model


def test_check_decoder_says_which_token_space_the_decoder_expects(demo_run):
    snakemake(demo_run, "check_decoder")
    report = json.loads((demo_run / "checks/decoder_token_space.json").read_text())
    assert set(report["scores"]) == {"pre_ln_post", "post_ln_post"} and report["images"] == 8
    assert report["configured"] == "post_ln_post"
    assert report["report"] in (demo_run / "logs/check_decoder.log").read_text()
    if report["expects"] is None:                  # the demo's decoder may have no preference
        assert "no clear preference" in report["report"]
    else:
        assert report["expects"] == "post_ln_post" and "agrees" in report["report"]


UPSTREAM_KEYS = ("epoch", "model_state_dict", "optimizer_state_dict", "lr_scheduler", "train_losses", "test_losses",
                 "lrs")


def test_a_released_checkpoint_is_evaluated_without_training(demo_run, tmp_path):
    """An experiment naming a checkpoint in upstream's layout (here the demo's own lite_bigG, with
    our keys stripped) has no train job, and its brain model decodes exactly what lite_bigG's does."""
    ckpt = torch.load(demo_run / "train_logs/lite_bigG/last.pth", weights_only=False)
    torch.save({k: ckpt[k] for k in UPSTREAM_KEYS}, tmp_path / "last.pth")
    overlay = {"experiments": {"released_lite": {"checkpoint": f"file:{tmp_path / 'last.pth'}"}}}
    target = "evals/released_lite/released_lite_all_recons.pt"
    plan = snakemake(demo_run, "-n", "tables/released_lite.csv", overrides=overlay).stdout
    assert "rule reconstruct:" in plan and "rule evaluate:" in plan and "rule train:" not in plan
    snakemake(demo_run, target, overrides=overlay)
    for kind in ("recons", "clipvoxels", "predcaptions"):
        got, want = load(demo_run, "released_lite", kind), load(demo_run, "lite_bigG", kind)
        assert (got == want).all() if kind == "predcaptions" else torch.equal(got, want), kind
