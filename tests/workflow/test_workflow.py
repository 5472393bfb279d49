"""The workflow as users run it: config validation, the download plan, data through to targets."""
import csv
import json
import re

import h5py
import numpy as np
import pytest

import foreign_dataset
from conftest import DEMO_TEST_IMAGES, REPO, snakemake
from fmri_recon.data import nsd
from fmri_recon.targets import clip_targets

TINY_CLIP = {"bigG": {"arch": "tiny-ViT-bigG-14", "emb_dim": 64, "weights": "random"},
             "vitb32": {"arch": "tiny-ViT-B-32", "emb_dim": 48, "weights": "random"}}


def planned_downloads(workdir, **overrides):
    out = snakemake(workdir, "-n", configs=(REPO / "config.yaml",), overrides=overrides).stdout
    return sorted(re.findall(r"\brule download:\n\s+output: (\S+)", out))


RELEASED_LIGHT = "train_logs/multisubject_subj01_1024hid_nolow_300ep/last.pth"
OPT_IN = {"lite_bigG": {"allow_test_subject_in_pretraining": True}}   # config.yaml's start on another subject


def test_real_config_downloads_exactly_what_it_needs(tmp_path):
    one = planned_downloads(tmp_path)
    expected = ["betas_all_subj01_fp32_renorm.hdf5", "coco_images_224_float16.hdf5", "evals/all_captions.pt",
                "evals/all_git_generated_captions.pt", "evals/all_images.pt", "wds/subj01/new_test/0.tar",
                "wds/subj01/train/0.tar"]
    models = ["brain_region_masks.hdf5", "gnet_multisubject.pt", "unclip6_epoch0_step110000.ckpt",  # later stages
              "bigG_to_L_epoch8.pth",                                                       # bigG -> GIT
              "sd_image_var_autoenc.pth", "convnext_xlarge_alpha0.75_fullckpt.pth",             # blurry branch
              RELEASED_LIGHT]                                                           # lite_bigG's start
    assert one == sorted(f"data/mindeyev2/{f}" for f in expected + models)
    no_blurry = planned_downloads(tmp_path, experiments={"blurry_bigG": {"blurry_recon": False}})
    assert sorted(set(one) - set(no_blurry)) == ["data/mindeyev2/convnext_xlarge_alpha0.75_fullckpt.pth",
                                                 "data/mindeyev2/sd_image_var_autoenc.pth"]
    three = planned_downloads(tmp_path, num_sessions=3)
    assert sorted(set(three) - set(one)) == ["data/mindeyev2/wds/subj01/train/1.tar",
                                             "data/mindeyev2/wds/subj01/train/2.tar"]
    assert set(one) <= set(three) and len(three) == len(one) + 2
    # subject 2 with config.yaml's start, pretrained on subject 2: refused unless opted in (test_subject_leak)
    old = planned_downloads(tmp_path, new_test=False, subject=2, experiments=OPT_IN)
    assert "data/mindeyev2/wds/subj02/test/0.tar" in old
    assert not any("subj01" in f for f in old if not f.endswith(RELEASED_LIGHT))   # config.yaml's init_from


def test_real_config_captions_bigG_with_upstreams_released_converter(tmp_path):
    out = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",)).stdout
    jobs = out.split("\n\n")
    converters = [j for j in jobs if "rule converter:" in j]
    assert sorted(re.search(r"output: (\S+),", j).group(1) for j in converters) == [
        "cache/converters/vitb32_to_bigG.pt", "cache/converters/vitb32_to_git.pt"]      # none for bigG -> GIT
    lite = [j for j in jobs if "rule reconstruct:" in j and "evals/lite_bigG/" in j]
    assert len(lite) == 1 and "data/mindeyev2/bigG_to_L_epoch8.pth" in lite[0]


def test_single_file_refiner_gets_the_sdxl_configs_and_no_weights_of_sdxl_base(tmp_path):
    zavy = tmp_path / "zavychromaxl_v30.safetensors"
    zavy.write_bytes(b"")
    out = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides={"refine": {"base": f"file:{zavy}"}}).stdout
    jobs = out.split("\n\n")
    refines = [j for j in jobs if "rule refine:" in j]
    assert refines and all(str(zavy) in j and "weights/configs/stabilityai/stable-diffusion-xl-base-1.0" in j
                           for j in refines)
    assert any("rule snapshot_configs:" in j for j in jobs)
    assert not any("weights/snapshots/stabilityai" in j for j in jobs)       # the 14 GB base is not fetched


@pytest.mark.parametrize("overrides, message", [
    ({"num_sesions": 2}, r"'num_sesions' was unexpected"),
    ({"targets": {"batch_sise": 8}}, r"'batch_sise' was unexpected"),
    ({"dataset": "fmri"}, r"'fmri' is not one of \['nsd', 'synthetic', 'own'\]"),
    ({"experiments": {"x": {"clip_target": "bigG", "hiden_dim": 3}}}, r"'hiden_dim' was unexpected"),
    ({"experiments": {"x": {"clip_target": "ViT-H"}}}, r"experiments.x.clip_target = 'ViT-H' is not a key of "
                                                        r"clip_models"),
])
def test_bad_config_stops_before_any_job(tmp_path, overrides, message):
    result = snakemake(tmp_path, "-n", overrides=overrides, check=False)
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert re.search(message, said), said[-3000:]
    assert not (tmp_path / "logs").exists()


def test_real_config_fine_tunes_its_default_experiment_from_the_released_light_model(tmp_path):
    """lite_bigG starts from upstream's released multi-subject light model (downloaded by its own
    job, an input of its train job); the other experiments train from scratch."""
    out = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",)).stdout
    jobs = {m.group(1): m.group(0) for m in re.finditer(r"rule train:\n(?:\s+\w+:.*\n)*?\s+wildcards: experiment=(\w+)", out)}
    assert sorted(jobs) == ["blurry_bigG", "lite_bigG", "residual_bigG", "seed_vitb32"]
    assert f"data/mindeyev2/{RELEASED_LIGHT}" in jobs["lite_bigG"]
    assert not any(RELEASED_LIGHT in job for name, job in jobs.items() if name != "lite_bigG")
    local = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",),
                      overrides={"experiments": {"lite_bigG": {"init_from": "file:/ckpts/last.pth"}}}, check=False)
    assert "/ckpts/last.pth" in local.stdout + local.stderr and RELEASED_LIGHT not in local.stdout
    bad = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), check=False,
                    overrides={"experiments": {"lite_bigG": {"init_from": "lite_bigG"}}})
    assert bad.returncode != 0
    assert "experiments.lite_bigG.init_from = 'lite_bigG' is not another experiment" in bad.stdout + bad.stderr


def test_a_model_pretrained_on_the_test_subject_is_refused_before_any_job(tmp_path):
    """subject 2 with config.yaml's default start (the light model, pretrained on subjects 2-8)
    would fine-tune on subject 2's own test images: refused while the DAG is built, naming the
    subject, the checkpoint and the file to use; an explicit key allows it."""
    bad = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides={"subject": 2}, check=False)
    said = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "rule " not in bad.stdout
    assert (f"experiments.lite_bigG.init_from = 'data:{RELEASED_LIGHT}' was pretrained on subjects 2, 3, 4, 5, 6, 7, "
            "8 (all but 1), so on subject 2's own test images") in said, said[-2000:]
    assert "data:train_logs/final_multisubject_subj02/last.pth" in said
    meant = {"subject": 2, "experiments": {"lite_bigG": {"allow_test_subject_in_pretraining": True}}}
    assert "rule train:" in snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=meant).stdout
    final = {"experiments": {"lite_bigG": {"init_from": None},
                             "f": {"checkpoint": "data:train_logs/final_subj01_pretrained_1sess_24bs/last.pth"}},
             "subject": 5}
    bad = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=final, check=False)
    assert "experiments.f.checkpoint" in bad.stdout + bad.stderr and "subject 5's own test images" in bad.stdout


def test_the_paper_overlay_fine_tunes_the_final_multisubject_model_at_hidden_4096_with_the_blurry_branch(tmp_path):
    import yaml
    from snakemake.utils import update_config

    from fmri_recon import experiment
    from fmri_recon.configuration import defaults

    zavy = tmp_path / "zavychromaxl_v30.safetensors"
    zavy.write_bytes(b"")
    configs = (REPO / "config.yaml", REPO / "paper_1hour.yaml")
    out = snakemake(tmp_path, "-n", configs=configs, overrides={"refine": {"base": f"file:{zavy}"}}).stdout
    jobs = {(m.group(1), m.group(3)): m.group(2) for m in re.finditer(
        r"rule (\w+):\n((?:\s+\w+:.*\n)*?)\s+wildcards: (?:name|experiment)=(\w+)\n", out)}
    assert {j for j in jobs if j[1] == "paper_1hour_released"} == {("evaluate", "paper_1hour_released")}
    train = jobs["train", "paper_1hour"]
    assert "data/mindeyev2/train_logs/final_multisubject_subj01/last.pth" in train
    assert "cache/lowlevel_targets.hdf5" in train and "convnext_xlarge_alpha0.75_fullckpt.pth" in train
    assert {j[1] for j in jobs if j[0] == "train"} == {"paper_1hour"}
    config = yaml.safe_load(configs[0].read_text())        # the settings, merged as Snakemake merges overlays
    update_config(config, yaml.safe_load(configs[1].read_text()))
    config["model"] = {**defaults("model"), **(config.get("model") or {})}
    settings = json.loads(experiment.train_params({**config, "new_test": True}, "paper_1hour"))
    assert settings["hidden_dim"] == 4096 and settings["blurry_recon"] is True and settings["deepspeed_offload"]
    assert (settings["num_epochs"], settings["batch_size"], settings["max_lr"]) == (150, 24, 3e-4)
    assert settings["clip_exclude_mean"] is False and settings["num_sessions"] == 1


def test_a_released_final_model_goes_straight_to_reconstruction(tmp_path):
    """An experiment naming upstream's released final model is downloaded and decoded (blurry
    branch included), never trained; naming both a checkpoint and a start is refused."""
    final = "train_logs/final_subj01_pretrained_1sess_24bs/last.pth"
    overlay = {"experiments": {"final_1sess": {"checkpoint": f"data:{final}", "hidden_dim": 4096,
                                               "blurry_recon": True, "clip_exclude_mean": False}}}
    out = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=overlay).stdout
    jobs = re.findall(r"rule (\w+):\n(?:\s+\w+:.*\n)*?\s+wildcards: (?:name|experiment)=final_1sess\n", out)
    assert sorted(jobs) == ["blurry", "evaluate", "reconstruct", "refine"], jobs
    assert f"output: data/mindeyev2/{final}" in out
    both = {"experiments": {"final_1sess": {**overlay["experiments"]["final_1sess"], "init_from": "lite_bigG"}}}
    bad = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=both, check=False)
    assert bad.returncode != 0 and "experiments.final_1sess has both checkpoint" in bad.stdout + bad.stderr


def test_released_reconstructions_are_only_scored(tmp_path):
    """An experiment naming upstream's released evals/ folder downloads its tensors (the blurry ones
    too with blurry_recon) and runs evaluate on them: no train, reconstruct or refine job."""
    folder = "evals/final_subj01_pretrained_1sess_24bs"
    overlay = {"experiments": {"paper_1sess": {"outputs": f"data:{folder}", "blurry_recon": True}}}
    out = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=overlay).stdout
    jobs = re.findall(r"rule (\w+):\n(?:\s+\w+:.*\n)*?\s+wildcards: (?:\w+=\w+, )*(?:name|experiment)=paper_1sess\b", out)
    assert sorted(jobs) == ["evaluate"] + ["released_output"] * 5, jobs
    for kind in ("recons", "enhancedrecons", "blurryrecons", "clipvoxels", "predcaptions"):
        assert f"output: data/mindeyev2/{folder}/final_subj01_pretrained_1sess_24bs_all_{kind}.pt" in out
    both = {"experiments": {"paper_1sess": {**overlay["experiments"]["paper_1sess"], "init_from": "lite_bigG"}}}
    bad = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=both, check=False)
    assert bad.returncode != 0 and "experiments.paper_1sess has outputs" in bad.stdout + bad.stderr


def test_download_plan_gives_each_files_size_from_the_hub(tmp_path):
    """checks/download_plan.tsv: every dataset file the real config downloads, with the size the
    hub's metadata gives (HEAD requests only), and what is already here."""
    from hub_server import FakeHub

    overrides = {"clip_models": TINY_CLIP, "evaluate": {"clip_weights": "random"}}
    planned = [f[len("data/mindeyev2/"):] for f in planned_downloads(tmp_path, **overrides)]
    files = {f: bytes((i + 1) * 1_000_000) for i, f in enumerate(planned)}   # 0.1 GB in all
    here = tmp_path / "data/mindeyev2" / planned[0]
    here.parent.mkdir(parents=True)
    here.write_bytes(files[planned[0]])
    with FakeHub(files) as hub:
        snakemake(tmp_path, "checks/download_plan.tsv", configs=(REPO / "config.yaml",), overrides=overrides,
                  env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint})
        assert {method for method, _, _ in hub.requests} == {"HEAD"}
    rows = list(csv.DictReader((tmp_path / "checks/download_plan.tsv").open(), delimiter="\t"))
    assert [r["file"] for r in rows] == sorted(planned)
    assert {r["file"]: int(r["bytes"]) for r in rows} == {f: len(b) for f, b in files.items()}
    assert {r["file"]: r["status"] for r in rows} == {f: "here" if f == planned[0] else "to download" for f in planned}
    todo = sum(len(b) for f, b in files.items() if f != planned[0])
    log = (tmp_path / "logs/download_plan.log").read_text()
    assert f"{len(planned)} files, {len(planned) - 1} to download: {todo / 1e9:.2f} GB (1 already here)" in log
    dry = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), overrides=overrides)   # offline: the plan's sizes
    said = f"download: {len(planned) - 1} files to fetch, {todo / 1e9:.2f} GB (checks/download_plan.tsv)"
    assert said in dry.stdout + dry.stderr


def test_missing_files_with_download_false_are_listed(tmp_path):
    data = tmp_path / "nsd"
    foreign_dataset.write(data)
    (data / "evals/all_captions.pt").unlink()
    result = snakemake(tmp_path, "-n", configs=(REPO / "config.yaml",), check=False,
                       overrides={"download": False, "data_dir": str(data), "subject": 5, "experiments": OPT_IN})
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "files are missing under data_dir" in said and "evals/all_captions.pt" in said
    assert "wds/subj05/train/0.tar" not in said.split("missing under data_dir")[1]


TARGETS = ("cache/clip_targets/bigG.hdf5", "cache/clip_targets/vitb32.hdf5")


def foreign_config(data):
    return {"download": False, "data_dir": str(data), "subject": foreign_dataset.SUBJECT,
            "num_sessions": foreign_dataset.SESSIONS, "weights_dir": "weights", "clip_models": TINY_CLIP,
            "targets": {"device": "cpu"}, "decoder": {"weights": "random", "device": "cpu"},
            "captions": {"weights": "random"}, "refine": {"base": "random", "device": "cpu"},
            "lowlevel": {"vae": "random", "teacher": "random"},
            "experiments": {"lite_bigG": {"init_from": None}},   # tiny models: not the released light model
            "evaluate": {"gnet": "random", "nets": "random", "clip_weights": "random"}}


def test_foreign_dataset_runs_to_its_targets_without_code_change(tmp_path):
    """A dataset in the published layout, without region masks (only the evaluation would use them)."""
    data = tmp_path / "nsd"
    truth = foreign_dataset.write(data, masks=False)
    snakemake(tmp_path, *TARGETS, configs=(REPO / "config.yaml",), overrides=foreign_config(data))
    summary = json.loads((tmp_path / "cache/data/subj05.json").read_text())
    assert summary["num_voxels"] == foreign_dataset.VOXELS and summary["test_repeat_counts"] == {"1": 1, "2": 5}
    used = np.union1d(truth["behav"][:, 0], truth["test_ids"]).astype(int)
    for clip, shape in [("bigG", (256, 64)), ("vitb32", (49, 48))]:
        cache = clip_targets.TargetCache(tmp_path / f"cache/clip_targets/{clip}.hdf5")
        assert cache.image_ids.tolist() == used.tolist() and cache.shape == shape


def test_without_region_masks_the_whole_dag_plans_and_brain_correlation_is_left_out(tmp_path):
    data = tmp_path / "nsd"
    foreign_dataset.write(data, masks=False)
    out = snakemake(tmp_path, "-n", "tables/metrics.csv", configs=(REPO / "config.yaml",),
                    overrides={**foreign_config(data), "captions": {"weights": "random", "converters": {"bigG": "train"}}})
    jobs = [j for j in out.stdout.split("\n\n") if "rule evaluate:" in j]
    assert len(jobs) == 6 and not any("brain_region_masks" in j for j in jobs)


def test_nan_betas_stop_check_data_naming_the_rows(tmp_path):
    data = tmp_path / "nsd"
    truth = foreign_dataset.write(data)
    row = int(truth["behav"][7, 5])
    with h5py.File(data / "betas_all_subj05_fp32_renorm.hdf5", "a") as f:
        f["betas"][row, 3] = np.nan
    result = snakemake(tmp_path, "cache/data/subj05.json", configs=(REPO / "config.yaml",),
                       overrides=foreign_config(data), check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs/check_data/subj05.log").read_text()
    assert f"'betas' rows [{row}] (1 rows) hold NaN or Inf" in log
    assert not (tmp_path / "cache/data/subj05.json").exists()


def test_bad_file_fails_its_job_clearly_and_keeps_finished_work(tmp_path):
    data = tmp_path / "nsd"
    foreign_dataset.write(data, betas_name="data")
    result = snakemake(tmp_path, *TARGETS, "--keep-going", configs=(REPO / "config.yaml",),
                       overrides=foreign_config(data), check=False)
    assert result.returncode != 0
    log = (tmp_path / "logs/check_data/subj05.log").read_text()
    assert "betas_all_subj05_fp32_renorm.hdf5: no HDF5 dataset 'betas' (found ['data'])" in log
    assert not (tmp_path / "cache/data").exists() or not list((tmp_path / "cache/data").iterdir())
    weights = sorted((tmp_path / "weights/random/open_clip").iterdir())
    assert [w.name for w in weights] == ["bigG.safetensors", "vitb32.safetensors"]   # finished work kept
    stamp = [w.stat().st_mtime_ns for w in weights]
    with h5py.File(data / "betas_all_subj05_fp32_renorm.hdf5", "a") as f:        # the user fixes the file
        f.move("data", "betas")
    rerun = snakemake(tmp_path, *TARGETS, configs=(REPO / "config.yaml",), overrides=foreign_config(data))
    assert "random_clip" not in rerun.stderr.split("Job stats:")[1].split("Reasons")[0]
    assert [w.stat().st_mtime_ns for w in weights] == stamp
    assert (tmp_path / "cache/clip_targets/bigG.hdf5").exists()


@pytest.mark.e2e
def test_demo_builds_data_and_targets(demo_more_run):
    summary = json.loads((demo_more_run / "cache/data/subj01.json").read_text())
    assert summary["num_voxels"] == 600 and summary["test_images"] == DEMO_TEST_IMAGES
    split = nsd.open_split(demo_more_run / "data", 1, 1)
    for clip, shape in [("bigG", (256, 64)), ("vitb32", (49, 48))]:
        cache = clip_targets.TargetCache(demo_more_run / f"cache/clip_targets/{clip}.hdf5")
        assert cache.image_ids.tolist() == split.all_images().tolist() and cache.shape == shape
        tokens = cache.get(split.test_images).astype(np.float32)
        assert np.isfinite(tokens).all() and tokens.std() > 0.1
    for job in ("preprocess/subj01", "check_data/subj01", "targets/bigG"):   # demo_more starts from raw NSD
        assert (demo_more_run / f"benchmarks/{job}.tsv").exists() and (demo_more_run / f"logs/{job}.log").exists()


@pytest.mark.e2e
def test_second_demo_run_has_nothing_to_do(demo_run):
    result = snakemake(demo_run, "all", "-n")
    assert "Nothing to be done" in result.stdout + result.stderr
