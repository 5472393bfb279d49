"""The demo_more run starts from the synthetic dataset's raw NSD release, downloaded from a local
bucket (tests/conftest.py): the rebuilt files must equal the directly written ones, the bill must
list the bucket's files, and check_release must find no difference."""
from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import raw_release
import torch
from conftest import DEMO, MORE, REPO, snakemake

from fmri_recon.data import nsd, preprocess, raw_nsd

pytestmark = pytest.mark.e2e
SESSIONS = 2          # tests/support/demo_more.yaml: preprocess.sessions


def raw_keys():
    keys = [raw_nsd.DESIGN, raw_nsd.STIM_INFO, raw_nsd.STIMULI]
    return keys + raw_nsd.subject_keys(1, SESSIONS, {"beta_version": "b3", "beta_format": "nii.gz", "roi": "nsdgeneral"})


def test_rebuilt_files_equal_the_directly_written_ones(demo_more_run, nsd_bucket):
    data, direct = demo_more_run / "data", nsd_bucket.direct
    for name, key in ((nsd.betas_file(1), "betas"), (nsd.IMAGES_FILE, "images")):
        with h5py.File(direct / name) as a, h5py.File(data / name) as b:
            assert a[key].shape == b[key].shape
            np.testing.assert_array_equal(a[key][:], b[key][:])
    for tar in preprocess.subject_outputs(1, SESSIONS)[1:]:
        a, b = nsd.read_tar(direct / tar), nsd.read_tar(data / tar)
        for k in nsd.SAMPLE_ARRAYS:
            np.testing.assert_array_equal(a[k], b[k])
    assert torch.equal(torch.load(direct / nsd.EVAL_IMAGES), torch.load(data / nsd.EVAL_IMAGES))
    np.testing.assert_array_equal(np.load(direct / preprocess.SHARED_FILE), np.load(data / preprocess.SHARED_FILE))


def test_every_raw_file_came_from_the_bucket_once_with_its_provenance(demo_more_run, nsd_bucket):
    for key in raw_keys():
        here, there = demo_more_run / "nsd_raw" / key, nsd_bucket.root / key
        assert here.stat().st_size == there.stat().st_size
        if key.endswith((".tsv", ".csv")):       # the binary files carry their writing time (reused runs)
            assert here.read_bytes() == there.read_bytes()
        assert (demo_more_run / "logs/fetch_raw" / f"{key}.log").exists()
        assert len(nsd_bucket.gets(key)) <= 1                    # none when FMRI_DEMO_MORE_RUN was finished
    assert not (demo_more_run / "nsd_raw" / raw_nsd.betas_key(1, 1, "b3", "hdf5")).exists()   # only what the config reads
    origin = json.loads((demo_more_run / "data/provenance/subj01.json").read_text())
    betas = origin["sources"]["betas_session02"]
    assert betas["bytes"] == (nsd_bucket.root / raw_nsd.betas_key(1, 2)).stat().st_size
    assert origin["settings"]["beta_version"] == "b3" and origin["made"]["voxels"] == 600
    with h5py.File(demo_more_run / "data" / nsd.betas_file(1)) as f:
        assert json.loads(f["betas"].attrs["provenance"])["sources"] == origin["sources"]


def test_download_plan_lists_the_bucket_files_with_their_sizes(demo_more_run, nsd_bucket):
    """The bill covers both sources: the dataset repo's files NSD's release lacks, and the bucket's."""
    from hub_server import FakeHub

    hub_files = {f: (demo_more_run / "data" / f).read_bytes() for f in raw_release.NOT_IN_NSD[:3]}
    overrides = {"preprocess": {"url": nsd_bucket.url}}
    with FakeHub(hub_files) as hub:
        snakemake(demo_more_run, "checks/download_plan.tsv", "--forcerun", "download_plan", configs=(DEMO, MORE),
                  overrides=overrides, env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.endpoint})
    with open(demo_more_run / "checks/download_plan.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    bucket = {r["file"]: r for r in rows if r["repo"] == nsd_bucket.url}
    assert sorted(bucket) == sorted(raw_keys())
    for key, row in bucket.items():
        assert int(row["bytes"]) == (nsd_bucket.root / key).stat().st_size and row["status"] == "here"
    assert {r["file"] for r in rows if r["repo"] == "pscotti/mindeyev2"} == set(hub_files)   # nothing rebuilt is fetched


def test_check_release_finds_the_rebuild_equal_to_the_release(demo_more_run, nsd_bucket):
    overrides = {"preprocess": {"release_dir": str(nsd_bucket.direct)}}
    snakemake(demo_more_run, "checks/release_subj01.tsv", configs=(DEMO, MORE), overrides=overrides)
    with open(demo_more_run / "checks/release_subj01.tsv", newline="") as f:
        rows = {(r["item"], r["measure"]): r["value"] for r in csv.DictReader(f, delimiter="\t")}
    assert rows[(nsd.betas_file(1), "elements over tolerance")] == "0"
    assert rows[(nsd.betas_file(1), "max |rebuilt - released|")] == "0"
    assert rows[(nsd.IMAGES_FILE, "closest resize")] == "bilinear antialias"
    tars = [v for (item, _), v in rows.items() if item.endswith(".tar")]
    assert len(tars) == 4 * (SESSIONS + 2) and set(tars) == {"0"}


@pytest.mark.parametrize("images", ["raw", "release"])
def test_a_full_raw_subject_plans_only_its_own_files(tmp_path, images):
    """Subject 2, b2 betas, another ROI, all of NSD's sessions: the dry run fetches exactly its files
    (the stimuli only when the images are rebuilt too; else the released images file)."""
    pre = {"source": "raw", "beta_version": "b2", "roi": "prf-visualrois", "roi_labels": [1, 2], "images": images}
    overrides = {"dataset": "nsd", "download": True, "subject": 2, "preprocess": pre,
                 "experiments": {"lite_bigG": None, "blurry_bigG": None, "seed_vitb32": {"num_epochs": 1}},
                 "captions": {"weights": "random"}, "refine": {"base": "random"}, "decoder": {"weights": "random"}}
    out = snakemake(tmp_path, "all", "-n", overrides=overrides)
    lines = (out.stdout + out.stderr).splitlines()
    fetched = {lines[i + 1].split("output: nsd_raw/")[1] for i, line in enumerate(lines) if line.endswith("rule fetch_raw:")}
    want = {raw_nsd.DESIGN, raw_nsd.STIM_INFO, *([raw_nsd.STIMULI] if images == "raw" else []),
            *raw_nsd.subject_keys(2, 40, {"beta_version": "b2", "beta_format": "nii.gz", "roi": "prf-visualrois"})}
    assert fetched == want and len(want) == 44 + (images == "raw")
    hub = {lines[i + 1].split("output: data/")[1] for i, line in enumerate(lines) if line.endswith("rule download:")}
    assert (nsd.IMAGES_FILE in hub) == (images == "release") and nsd.betas_file(2) not in hub
    assert nsd.MASKS_FILE not in hub            # GNet's region masks describe nsdgeneral voxels, not this ROI's
    assert "betas_fithrf/betas_session40.nii.gz" in " ".join(want)
    assert "rule preprocess_subj02:" in "\n".join(lines) and "preprocess_subj01" not in "\n".join(lines)


def test_the_real_config_runs_its_released_start_on_rebuilt_files(tmp_path):
    """config.yaml (lite_bigG fine-tunes upstream's released model) from raw NSD: the checkpoint and
    the captions come from the hub, the data from the bucket, and nothing else changes."""
    out = snakemake(tmp_path, "all", "-n", configs=(REPO / "config.yaml",),
                    overrides={"preprocess": {"source": "raw"}, "num_sessions": 1})
    lines = (out.stdout + out.stderr).splitlines()
    hub = {lines[i + 1].split("output: ")[1] for i, line in enumerate(lines) if line.endswith("rule download:")}
    assert any(f.endswith("last.pth") for f in hub) and any(f.endswith(nsd.EVAL_CAPTIONS) for f in hub)
    assert not any(f.endswith((".tar", nsd.betas_file(1), nsd.IMAGES_FILE, nsd.EVAL_IMAGES)) for f in hub)
    fetched = [line for line in lines if line.endswith("rule fetch_raw:")]
    assert len(fetched) == 40 + 5 and "rule preprocess_subj01:" in lines[0] + "\n".join(lines)
    assert "rule train:" in "\n".join(lines)


def test_raw_files_missing_with_download_false_are_named(tmp_path):
    overrides = {"dataset": "nsd", "download": False, "preprocess": {"source": "raw", "sessions": 2},
                 "captions": {"weights": "random"}, "refine": {"base": "random"}, "decoder": {"weights": "random"}}
    out = snakemake(tmp_path, "all", "-n", overrides=overrides, check=False)
    said = out.stdout + out.stderr
    assert out.returncode != 0 and "of NSD's files are missing under preprocess.raw_dir (nsd_raw)" in said
    assert raw_nsd.betas_key(1, 2) in said


def test_predict_decodes_a_later_nsd_session_with_the_rebuilds_statistics(demo_more_run, nsd_bucket, tmp_path):
    """predict on NSD's own betas of session 2 (raw, int16) with seed_vitb32, trained on session 1:
    z-scored with zscore/subj01.npz, each trial alone, the CLIP embeddings it predicts pick the
    trial's own image above chance; nothing is evaluated."""
    from fmri_recon.targets import clip_targets

    tps, picked = 600, 150               # demo.yaml's synthetic trials per session; the first 150 are decoded
    table = tmp_path / "trials.csv"
    table.write_text("session,trial\n" + "".join(f"1,{t}\n" for t in range(1, picked + 1)))
    raw = demo_more_run / "nsd_raw"
    overrides = {"preprocess": {"url": nsd_bucket.url},
                 "predict": {"experiment": "seed_vitb32", "sessions": [str(raw / raw_nsd.betas_key(1, 2))],
                             "trials": str(table), "mask": str(raw / raw_nsd.roi_key(1, "nsdgeneral"))}}
    out = snakemake(demo_more_run, "predict", configs=(DEMO, MORE), overrides=overrides)
    ran = {line.split()[-1].rstrip(":") for line in (out.stdout + out.stderr).splitlines() if "rule " in line}
    assert {"predict_voxels", "predict_decode", "predict_page"} <= ran and not {"evaluate", "train"} & ran
    behav = nsd.read_tar(demo_more_run / "data" / nsd.train_tar(1, 1))["behav"][:, 0]
    test = nsd.read_tar(demo_more_run / "data" / nsd.test_tar(1, True))["behav"][:, 0]
    rows = np.concatenate([behav, test])
    rows = rows[(rows[:, nsd.COL_GLOBAL_TRIAL] >= tps) & (rows[:, nsd.COL_GLOBAL_TRIAL] < 2 * tps)]
    image = np.empty(tps, np.int64)
    image[rows[:, nsd.COL_GLOBAL_TRIAL].astype(int) - tps] = rows[:, nsd.COL_IMAGE]
    unique = np.unique(image)
    truth = torch.from_numpy(clip_targets.TargetCache(demo_more_run / "cache/clip_targets/vitb32.hdf5").get(unique))
    image = image[:picked]
    truth = truth.float()[np.searchsorted(unique, image)].flatten(1)
    pred = torch.load(demo_more_run / "predictions/seed_vitb32/clipvoxels.pt").float().flatten(1)
    sim = torch.nn.functional.normalize(pred, dim=1) @ torch.nn.functional.normalize(truth, dim=1).T
    other = torch.from_numpy(image[:, None] != image[None, :])     # pairs of trials of different images
    two_way = (((sim < sim.diag()[:, None]) & other).sum(1) / other.sum(1)).mean().item()
    assert pred.shape[0] == picked and two_way > 0.85, two_way     # measured .97 (600 trials), chance .5
