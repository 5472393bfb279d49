"""Raw NSD -> the pscotti layout (fmri_recon.data.preprocess, raw_nsd, behaviour, release_check),
against hand-computed cases and the synthetic dataset's raw release."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from fmri_recon.data import behaviour, nsd, preprocess, raw_nsd, rebuild, release_check, synthetic, synthetic_raw

SMALL = dict(num_voxels=[40], num_sessions=2, trials_per_session=60, num_images=80, num_test_images=8,
             image_size=32, raw_image_size=48)
SETTINGS = {"beta_version": "b3", "beta_format": "nii.gz", "roi": "nsdgeneral", "roi_labels": [1],
            "image_resize": "bilinear", "image_antialias": True}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The small synthetic dataset written directly and as NSD's raw release."""
    root = tmp_path_factory.mktemp("release")
    cfg = synthetic.SyntheticConfig(**SMALL)
    synthetic.write_dataset(cfg, root / "direct")
    synthetic_raw.write_raw(cfg, root / "bucket")
    return root


def raw_files(bucket, fmt="nii.gz", roi="nsdgeneral"):
    return {"betas": [bucket / raw_nsd.betas_key(1, k, "b3", fmt) for k in (1, 2)], "roi": bucket / raw_nsd.roi_key(1, roi),
            "responses": bucket / raw_nsd.responses_key(1)}


def rebuild_all(release, out, fmt="nii.gz", settings=SETTINGS):
    bucket = release / "bucket"
    shared = raw_nsd.read_shared1000(bucket / raw_nsd.DESIGN, bucket / raw_nsd.STIM_INFO)
    made = rebuild.build_subject(raw_files(bucket, fmt, settings["roi"]), 1, 2, settings, out, shared)
    preprocess.write_images(bucket / raw_nsd.STIMULI, out / nsd.IMAGES_FILE, settings, size=SMALL["image_size"])
    preprocess.write_eval_images(out, 1)
    preprocess.write_index_files(out, shared, {1: preprocess.trial_images(out, 1, 2)})
    return made


# --------------------------------------------------------------------------- the z-score
def test_normalise_uses_the_training_rows_mean_and_unbiased_std():
    betas = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 14.0], [100.0, -50.0]], np.float32)
    train = np.array([0, 1, 2])                   # row 3 is a test trial: not in the statistics
    # by hand: voxel 0 mean 3, std sqrt(((1-3)^2 + 0 + (5-3)^2) / 2) = 2; voxel 1 mean 34/3, std sqrt(16/3)
    m1, s1 = 34 / 3, np.sqrt(((10 - 34 / 3) ** 2 * 2 + (14 - 34 / 3) ** 2) / 2)
    want = np.array([[-1, (10 - m1) / s1], [0, (10 - m1) / s1], [1, (14 - m1) / s1], [48.5, (-50 - m1) / s1]])
    got = preprocess.normalise(betas.copy(), train, block=1)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_voxel_constant_over_the_training_rows_is_named():
    betas = np.array([[1.0, 2.0], [1.0, 3.0], [7.0, 4.0]], np.float32)
    with pytest.raises(nsd.DataError, match=r"voxel\(s\) \[0\] are constant"):
        preprocess.normalise(betas, np.array([0, 1]), path="x.nii.gz")


# --------------------------------------------------------------------------- behaviour
def responses_table():
    """Two sessions of 3 trials; image 5 is shared; NaNs where NSD has no answer."""
    nan = np.nan
    return pd.DataFrame({
        "SUBJECT": [2] * 6, "SESSION": [1, 1, 1, 2, 2, 2], "RUN": [1, 1, 2, 1, 1, 2], "TRIAL": [1, 2, 1, 1, 2, 1],
        "73KID": [4, 6, 9, 6, 4, 2], "TIME": [0.25, 0.26, 0.27, 7.5, 7.51, 7.52], "ISOLD": [0, 0, 0, 1, 1, 0],
        "ISCORRECT": [1, 0, nan, 1, 1, 0], "RT": [800.0, nan, 650.0, 700.0, 710.0, 720.0],
        "CHANGEMIND": [0, nan, 0, 0, 0, 1], "ISOLDCURRENT": [0, 0, 0, 1, 1, 0], "ISCORRECTCURRENT": [1, 0, nan, 1, 1, 0],
        "TOTAL1": [nan] * 6, "TOTAL2": [1, 2, 3, 4, 5, 6], "BUTTON": [1, 2, nan, 1, 2, 1]})


def test_behaviour_columns_follow_upstreams_notebook():
    shared = np.zeros(10, bool)
    shared[5] = True                               # 73KID 6 (1-based) is shared
    b, tps = behaviour.from_responses(responses_table(), shared)
    assert tps == 3
    np.testing.assert_array_equal(b[:, 0], [3, 5, 8, 5, 3, 1])            # 0-based 73k id
    np.testing.assert_array_equal(b[:, 5], [0, 1, 2, 3, 4, 5])            # (SESSION-1)*3 + row in session
    np.testing.assert_array_equal(b[:, 6], [0, 0, 0, 7, 7, 7])            # int(TIME): the day
    np.testing.assert_array_equal(b[:, 8], [1, 0, -1, 1, 1, 0])           # NaN -> -1
    np.testing.assert_array_equal(b[:, 9], [800, -1, 650, 700, 710, 720])
    np.testing.assert_array_equal(b[:, 13], [-1] * 6)
    np.testing.assert_array_equal(b[:, 16], [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(b[:, 1:5], responses_table()[["SUBJECT", "SESSION", "RUN", "TRIAL"]].to_numpy())


def test_context_rows_are_the_nearest_trials_first_and_repeats_compacted():
    b = np.zeros((8, nsd.BEHAV_COLUMNS))
    b[:, 0] = [1, 2, 1, 3, 4, 1, 2, 5]              # image 1 at trials 0, 2, 5; image 2 at 1, 6
    b[:, 5] = np.arange(8)
    arrays = behaviour.context_arrays(b, behaviour.sessions_of_rows(len(b), 4))
    past, future, olds = arrays["past_behav"], arrays["future_behav"], arrays["olds_behav"]
    assert past[3, :3, 5].tolist() == [2, 1, 0] and (past[3, 3:] == -1).all()     # i-1 first
    assert (past[4] == -1).all()                                                 # first trial of session 2
    assert future[0, :3, 5].tolist() == [1, 2, 3] and (future[0, 3:] == -1).all()
    assert olds[2, :2, 5].tolist() == [0, 5] and (olds[2, 2] == -1).all()
    assert olds[6, 0, 5] == 1 and (olds[6, 1:] == -1).all() and (olds[3] == -1).all()


def test_responses_with_unequal_sessions_are_refused():
    table = responses_table().iloc[:5]
    with pytest.raises(nsd.DataError, match=r"responses.tsv: sessions \[1, 2\] have \[3, 2\] trials"):
        behaviour.from_responses(table, np.zeros(10, bool))


# --------------------------------------------------------------------------- readers
def test_nifti_and_hdf5_betas_give_the_voxels_in_c_order_of_the_nifti_grid(release):
    bucket = release / "bucket"
    mask = raw_nsd.read_roi(bucket / raw_nsd.roi_key(1), [1])
    assert len(set(mask.shape)) == 3                                     # unequal sides: an axis mix-up shows
    nii = raw_nsd.read_betas(bucket / raw_nsd.betas_key(1, 1, "b3", "nii.gz"), mask)
    h5 = raw_nsd.read_betas(bucket / raw_nsd.betas_key(1, 1, "b3", "hdf5"), mask)
    np.testing.assert_array_equal(nii, h5)
    import nibabel as nib

    volume = np.asanyarray(nib.load(str(bucket / raw_nsd.betas_key(1, 1, "b3", "nii.gz"))).dataobj)
    x, y, z = np.argwhere(mask)[7]                                       # argwhere walks C order
    np.testing.assert_array_equal(nii[:, 7], volume[x, y, z, :])
    with h5py.File(bucket / raw_nsd.betas_key(1, 1, "b3", "hdf5")) as f:
        assert f["betas"].shape == (SMALL["trials_per_session"], *mask.shape[::-1])   # (750, Z, Y, X)


def test_a_betas_volume_on_another_grid_is_refused(release, tmp_path):
    import nibabel as nib

    bucket = release / "bucket"
    mask = raw_nsd.read_roi(bucket / raw_nsd.roi_key(1), [1])
    wrong = tmp_path / "betas_session01.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((*mask.shape[::-1], 5), np.int16), np.eye(4)), str(wrong))
    with pytest.raises(nsd.DataError, match=r"betas_session01.nii.gz: betas of shape .* on the ROI's grid"):
        raw_nsd.read_betas(wrong, mask)


def test_design_and_stim_info_must_agree_on_the_shared_images(release, tmp_path):
    bucket = release / "bucket"
    table = pd.read_csv(bucket / raw_nsd.STIM_INFO)
    table.loc[0, "shared1000"] = not table.loc[0, "shared1000"]
    table.to_csv(tmp_path / "info.csv", index=False)
    with pytest.raises(nsd.DataError, match="disagree on the shared images"):
        raw_nsd.read_shared1000(bucket / raw_nsd.DESIGN, tmp_path / "info.csv")


def test_a_session_with_fewer_trials_than_its_responses_is_named(release, tmp_path):
    bucket = release / "bucket"
    files = raw_files(bucket)
    files["betas"] = [files["betas"][0], files["betas"][0]]
    table = pd.read_csv(files["responses"], sep="\t")
    table = pd.concat([table, table[table.SESSION == 2].assign()]).reset_index(drop=True)   # session 2 doubled
    files["responses"] = tmp_path / "responses.tsv"
    table.to_csv(files["responses"], sep="\t", index=False)
    shared = raw_nsd.read_shared1000(bucket / raw_nsd.DESIGN)
    with pytest.raises(nsd.DataError, match="responses.tsv: sessions"):
        rebuild.build_subject(files, 1, 2, SETTINGS, tmp_path / "out", shared)


# --------------------------------------------------------------------------- the whole rebuild
@pytest.mark.parametrize("fmt", ["nii.gz", "hdf5"])
def test_rebuilt_layout_equals_the_directly_written_one(release, tmp_path, fmt):
    made = rebuild_all(release, tmp_path, fmt)
    direct = release / "direct"
    assert made["voxels"] == SMALL["num_voxels"][0] and made["trials"] == 2 * SMALL["trials_per_session"]
    for name, key in ((nsd.betas_file(1), "betas"), (nsd.IMAGES_FILE, "images")):
        with h5py.File(direct / name) as a, h5py.File(tmp_path / name) as b:
            np.testing.assert_array_equal(a[key][:], b[key][:])
    for tar in preprocess.subject_outputs(1, 2)[1:]:
        a, b = nsd.read_tar(direct / tar), nsd.read_tar(tmp_path / tar)
        for k in nsd.SAMPLE_ARRAYS:
            np.testing.assert_array_equal(a[k], b[k])
    assert torch.equal(torch.load(direct / nsd.EVAL_IMAGES), torch.load(tmp_path / nsd.EVAL_IMAGES))
    np.testing.assert_array_equal(np.load(direct / preprocess.SHARED_FILE), np.load(tmp_path / preprocess.SHARED_FILE))
    with h5py.File(direct / preprocess.INDICES_FILE) as a, h5py.File(tmp_path / preprocess.INDICES_FILE) as b:
        np.testing.assert_array_equal(a["subj01"][:], b["subj01"][:])


def test_another_roi_gives_its_own_voxels(release, tmp_path):
    settings = {**SETTINGS, "roi": "prf-visualrois", "roi_labels": [1, 3]}   # V1v and V2v of the synthetic grid
    made = rebuild_all(release, tmp_path, settings=settings)
    n = SMALL["num_voxels"][0]
    assert made["voxels"] == 2 * max(2, round(0.15 * n))
    with h5py.File(tmp_path / nsd.betas_file(1)) as f:
        assert f["betas"].shape == (2 * SMALL["trials_per_session"], made["voxels"])


def test_the_rebuilt_betas_carry_their_provenance(release, tmp_path):
    bucket = release / "bucket"
    files = raw_files(bucket)
    origin = preprocess.provenance({"roi": files["roi"]}, SETTINGS)
    shared = raw_nsd.read_shared1000(bucket / raw_nsd.DESIGN)
    rebuild.build_subject(files, 1, 2, SETTINGS, tmp_path, shared, origin)
    import json

    with h5py.File(tmp_path / nsd.betas_file(1)) as f:
        got = json.loads(f["betas"].attrs["provenance"])
    assert got["sources"]["roi"]["bytes"] == files["roi"].stat().st_size and got["settings"] == SETTINGS
    assert got["code_version"]


# --------------------------------------------------------------------------- check against the release
def test_release_check_finds_no_difference_in_an_equal_rebuild_and_one_changed_value(release, tmp_path):
    rebuild_all(release, tmp_path / "rebuilt")
    stimuli = release / "bucket" / raw_nsd.STIMULI
    rows = release_check.check(tmp_path / "rebuilt", release / "direct", stimuli, 1, 2, image_count=16)
    values = {(r["item"], r["measure"]): r["value"] for r in rows}
    assert values[(nsd.betas_file(1), "elements over tolerance")] == 0
    assert values[(nsd.IMAGES_FILE, "closest resize")] == "bilinear antialias"
    assert all(r["note"] == "equal" for r in rows if r["item"].endswith(".tar"))
    changed = tmp_path / "changed"
    shutil.copytree(release / "direct", changed)
    with h5py.File(changed / nsd.betas_file(1), "a") as f:
        f["betas"][5, 3] += 0.01
    arrays = nsd.read_tar(changed / nsd.train_tar(1, 0))
    arrays["behav"][0, 0, 6] += 1                                           # one time stamp
    nsd.write_tar(changed / nsd.train_tar(1, 0), arrays)
    rows = release_check.check(tmp_path / "rebuilt", changed, stimuli, 1, 2, image_count=16)
    values = {(r["item"], r["measure"]): (r["value"], r["note"]) for r in rows}
    assert values[(nsd.betas_file(1), "elements over tolerance")][0] == 1
    assert values[(nsd.train_tar(1, 0), "behav max |diff|")] == ("1", "columns differing: [6]")


def test_release_check_names_the_resize_that_made_the_release(release, tmp_path):
    bicubic = tmp_path / nsd.IMAGES_FILE
    preprocess.write_images(release / "bucket" / raw_nsd.STIMULI, bicubic,
                            {**SETTINGS, "image_resize": "bicubic", "image_antialias": False}, size=SMALL["image_size"])
    rows = release_check.compare_images(release / "bucket" / raw_nsd.STIMULI, bicubic, np.arange(16))
    assert rows[-1]["value"] == "bicubic" and float(next(r["value"] for r in rows if r["measure"].endswith("bicubic"))) < 1e-3


def test_the_rebuild_keeps_the_statistics_it_z_scored_with(release, tmp_path):
    """zscore/subj01.npz: its mean and std turn the raw masked betas into the betas file (predict's
    `zscore: training` relies on it), and its mask and affine are the ROI's."""
    import nibabel as nib

    rebuild_all(release, tmp_path)
    z = preprocess.read_zscore(tmp_path / preprocess.zscore_file(1))
    bucket = release / "bucket"
    roi = bucket / raw_nsd.roi_key(1, "nsdgeneral")
    np.testing.assert_array_equal(z["mask"], raw_nsd.read_roi(roi, [1]))
    np.testing.assert_array_equal(z["affine"], nib.load(roi).affine)
    raw = raw_nsd.read_betas(bucket / raw_nsd.betas_key(1, 2), z["mask"])
    with h5py.File(tmp_path / nsd.betas_file(1)) as f:
        np.testing.assert_allclose((raw - z["mean"]) / z["std"], f["betas"][60:120], atol=1e-5)
