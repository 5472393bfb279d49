"""A lab's own scans end to end (docs/own_data.md): the guide's worked example runs as written
(its commands, taken from the page), a tiny model trains on two sessions, and ``predict`` decodes a
third session it never saw; predict's DAG holds no evaluation; bad input stops before any training."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO, REPO, snakemake

from fmri_recon.data import nsd, own_build
from fmri_recon.predict import prepared
from fmri_recon.targets import clip_targets

pytestmark = pytest.mark.e2e
GUIDE = REPO / "docs" / "own_data.md"
EXAMPLE = REPO / "examples" / "own_lab.yaml"
RUN_DIR = "own_demo"                 # the guide's run folder, replaced by the test's own


def guide_commands() -> list[str]:
    """The first bash block after the guide's "Worked example" heading."""
    text = GUIDE.read_text().split("## Worked example", 1)[1]
    return re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()


@pytest.fixture(scope="module")
def own_run(tmp_path_factory) -> Path:
    """The guide's commands, run from the checkout with this interpreter, in a temporary run folder."""
    workdir = tmp_path_factory.mktemp("own_demo")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / ".hf"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for command in guide_commands():
        command = command.replace(".venv/bin/python", sys.executable).replace(".venv/bin/snakemake",
                                                                             f"{sys.executable} -m snakemake")
        command = re.sub(rf"\b{RUN_DIR}\b", str(workdir), command)
        done = subprocess.run(command, shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{command}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return workdir


def lab_overrides(lab: Path, **predict) -> dict:
    """examples/own_lab.yaml's inputs as absolute paths (for runs in other folders)."""
    sessions = [str(lab / "sessions" / f"ses-0{k}_betas.nii.gz") for k in (1, 2)]
    return {"own": {"sessions": sessions, "mask": str(lab / "mask.nii.gz"), "trials": str(lab / "trials.csv"),
                    "images": str(lab / "stimuli")},
            "predict": {"sessions": [str(lab / "new" / "ses-01_betas.nii.gz")], "trials": str(lab / "new" / "trials.csv"),
                        "images": str(lab / "stimuli"), **predict}}


def planned_jobs(out: subprocess.CompletedProcess) -> dict[str, int]:
    said = out.stdout + out.stderr
    table = said.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


# --------------------------------------------------------------------------- the worked example
def test_predict_writes_images_captions_and_a_page_for_every_new_trial(own_run):
    out = own_run / "predictions" / "lab_bigG"
    new = prepared.read(own_run / "predictions" / "inputs" / "voxels.hdf5")
    groups = len(new["labels"])
    shown = [r["image"] for r in csv.DictReader(open(own_run / "lab" / "new" / "trials.csv"))]
    assert groups == len(set(shown)) and len(shown) == 250 and new["labels"] == list(dict.fromkeys(shown))
    assert torch.load(out / "recons.pt").shape == (groups, 3, 256, 256)
    assert torch.load(out / "enhancedrecons.pt").shape[0] == groups
    captions = list(csv.DictReader(open(out / "captions.csv")))
    assert [c["label"] for c in captions] == new["labels"] and all(c["caption"] for c in captions)
    page = (out / "index.html").read_text()
    pictures = re.findall(r'src="(images/[^"]+)"', page)
    assert len(pictures) == 3 * groups and all((out / p).is_file() for p in pictures)
    assert (out / "grid.png").stat().st_size > 10_000


def test_predictions_of_the_unseen_session_pick_their_own_images(own_run):
    """The science: the clip embeddings predicted from the held-out session's volumes retrieve the
    image that was shown far above chance (a wrong mask order, z-score or grouping falls to chance)."""
    new = prepared.read(own_run / "predictions" / "inputs" / "voxels.hdf5")
    stimuli = own_build.read_stimuli(own_run / "data")
    row = dict(zip(stimuli.image, stimuli.row))
    known = [i for i, image in enumerate(new["images"]) if image in row]       # images the targets cover
    ids = np.array([row[new["images"][i]] for i in known])
    unique = np.unique(ids)
    truth = torch.from_numpy(clip_targets.TargetCache(own_run / "cache" / "clip_targets" / "bigG.hdf5").get(unique))
    truth = truth.float()[np.searchsorted(unique, ids)].flatten(1)
    pred = torch.load(own_run / "predictions" / "lab_bigG" / "clipvoxels.pt").float()[known].flatten(1)
    sim = torch.nn.functional.normalize(pred, dim=1) @ torch.nn.functional.normalize(truth, dim=1).T
    top1 = (sim.argmax(1) == torch.arange(len(sim))).float().mean().item()
    two_way = ((sim < sim.diag()[:, None]).float().sum(1) / (len(sim) - 1)).mean().item()
    assert len(known) > 150 and top1 > 0.15 and two_way > 0.85, (top1, two_way)   # measured .40, .97; chance .005, .5


def test_the_layout_records_where_it_came_from(own_run):
    origin = json.loads((own_run / "data" / "provenance" / "own_subj09.json").read_text())
    assert set(origin["sources"]) == {"mask", "trials", "betas_session01", "betas_session02"}
    assert origin["made"]["trials"] == 250 + 243 and origin["settings"]["image_resize"] == "bilinear"
    summary = json.loads((own_run / "cache" / "data" / "subj09.json").read_text())
    assert summary["num_voxels"] == 500 and summary["test_images"] == origin["made"]["test_images"]


# --------------------------------------------------------------------------- the DAG
def test_predict_plans_no_evaluation_with_or_without_images(own_run, tmp_path):
    lab = own_run / "lab"
    table = tmp_path / "volumes.csv"
    rows = list(csv.DictReader(open(lab / "new" / "trials.csv")))
    table.write_text("session,trial\n" + "".join(f"{r['session']},{r['trial']}\n" for r in rows))
    for images, trials in ((str(lab / "stimuli"), str(lab / "new" / "trials.csv")), (None, str(table))):
        overrides = lab_overrides(lab, images=images, trials=trials)
        jobs = planned_jobs(snakemake(tmp_path / str(bool(images)), "predict", "-n", configs=(DEMO, EXAMPLE),
                                      overrides=overrides))
        assert {"prepare_own", "train", "predict_voxels", "predict_decode", "predict_refine", "predict_page"} <= set(jobs)
        assert not {"evaluate", "gt_features", "eval_weights", "metrics_table", "reconstruct", "overview"} & set(jobs)


def test_the_real_config_fine_tunes_the_released_model_for_own_data(own_run, tmp_path):
    """config.yaml's lite_bigG on own data: the released multi-subject checkpoint and decoders come
    from the hub, the subject's files from prepare_own, and nothing scores."""
    overrides = {"dataset": "own", "subject": 9, "num_sessions": 2, **lab_overrides(own_run / "lab", experiment="lite_bigG")}
    out = snakemake(tmp_path, "predict", "-n", configs=(REPO / "config.yaml",), overrides=overrides)
    lines = (out.stdout + out.stderr).splitlines()
    hub = {lines[i + 1].split("output: ")[1] for i, line in enumerate(lines) if line.endswith("rule download:")}
    assert any(f.endswith("multisubject_subj01_1024hid_nolow_300ep/last.pth") for f in hub)
    assert not any(f.endswith((".tar", ".hdf5", nsd.EVAL_CAPTIONS)) for f in hub), hub
    jobs = planned_jobs(out)
    assert jobs["prepare_own"] == 1 and jobs["train"] == 1 and "evaluate" not in jobs


def test_evaluating_own_data_says_why_not(own_run, tmp_path):
    out = snakemake(tmp_path, "all", "-n", configs=(DEMO, EXAMPLE), overrides=lab_overrides(own_run / "lab"),
                    check=False)
    assert out.returncode != 0 and "dataset = own has no reference captions" in out.stdout + out.stderr


# --------------------------------------------------------------------------- bad input
def test_a_bad_table_stops_the_run_before_any_job(own_run, tmp_path):
    table = tmp_path / "trials.csv"
    lines = (own_run / "lab" / "trials.csv").read_text().splitlines()
    table.write_text("\n".join(lines + [lines[5]]) + "\n")                 # trial 5 of session 1 twice
    overrides = lab_overrides(own_run / "lab")
    overrides["own"]["trials"] = str(table)
    out = snakemake(tmp_path, "predict", configs=(DEMO, EXAMPLE), overrides=overrides, check=False)
    said = out.stdout + out.stderr
    assert out.returncode != 0 and f"{table}: trial 5 of session 1 is listed 2 times" in said
    assert "Job stats" not in said and not (tmp_path / "data").exists()


def test_a_nan_volume_stops_the_run_before_training(own_run, tmp_path):
    import nibabel as nib

    lab = own_run / "lab"
    img = nib.load(lab / "sessions" / "ses-02_betas.nii.gz")
    data = np.asarray(img.dataobj).copy()
    mask = nib.load(lab / "mask.nii.gz").get_fdata() > 0
    data[..., 20][np.unravel_index(np.flatnonzero(mask)[7], mask.shape)] = np.nan
    bad = tmp_path / "ses-02_nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), bad)
    overrides = lab_overrides(lab)
    overrides["own"]["sessions"][1] = str(bad)
    out = snakemake(tmp_path, "predict", configs=(DEMO, EXAMPLE), overrides=overrides, check=False)
    said = out.stdout + out.stderr + "".join(p.read_text() for p in (tmp_path / "logs").glob("prepare_own.log"))
    assert out.returncode != 0 and f"{bad}: volume(s) [21] (trial, 1-based) hold NaN or Inf inside the mask" in said
    assert not (tmp_path / "train_logs").exists() and not (tmp_path / "data" / nsd.betas_file(9)).exists()


def test_predict_with_a_blurry_model_draws_its_branch(own_run, tmp_path):
    overrides = {**lab_overrides(own_run / "lab", experiment="lab_blurry"),
                 "experiments": {"lab_blurry": {"init_from": None, "blurry_recon": True}}}
    jobs = planned_jobs(snakemake(tmp_path, "predict", "-n", configs=(DEMO, EXAMPLE), overrides=overrides))
    assert jobs["predict_blurry"] == 1 and jobs["lowlevel_targets"] == 1 and "blurry" not in jobs
