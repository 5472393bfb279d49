"""A lab's own scans -> the layout (fmri_recon.data.own_input, own_build) and the new volumes of
predict (fmri_recon.predict.voxels): hand-checked numbers, and every bad input named."""
from __future__ import annotations

import shutil

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_recon.data import behaviour, nsd, own_build, own_input, preprocess, synthetic_lab
from fmri_recon.helpers import DataError
from fmri_recon.predict import prepared, voxels

RESIZE = {"image_resize": "bilinear", "image_antialias": True}
SMALL = dict(num_voxels=[40], trials_per_session=60, num_images=70, num_test_images=6, raw_image_size=40)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    return root, synthetic_lab.write(root / "lab", synthetic_lab.default_config(**SMALL))


def settings_of(paths, **changes):
    out = {"sessions": paths["sessions"], "mask": paths["mask"], "trials": paths["trials"], "images": paths["images"],
           "axes": "TZYX", "key": "betas"}
    return {**out, **changes}


def masked(path, mask):
    return np.asarray(nib.load(path).dataobj).reshape(-1, nib.load(path).shape[3])[mask.reshape(-1)].T


@pytest.fixture(scope="module")
def built(lab, tmp_path_factory):
    out = tmp_path_factory.mktemp("layout")
    made = own_build.build(settings_of(lab[1]), 9, out, RESIZE)
    return out, made


# --------------------------------------------------------------------------- the layout
def test_betas_are_the_masked_volumes_z_scored_with_the_train_trials(lab, built):
    paths, (out, _) = lab[1], built
    mask = nib.load(paths["mask"]).get_fdata() > 0
    table = pd.read_csv(paths["trials"])
    raw = np.concatenate([masked(f, mask)[table.trial[table.session == k].to_numpy() - 1]
                          for k, f in enumerate(paths["sessions"], 1)]).astype(np.float64)
    train = (table.sort_values(["session", "trial"]).split == "train").to_numpy()
    want = (raw - raw[train].mean(0)) / raw[train].std(0, ddof=1)
    with h5py.File(out / nsd.betas_file(9)) as f:
        np.testing.assert_allclose(f["betas"][:], want, atol=1e-5)
    z = preprocess.read_zscore(out / preprocess.zscore_file(9))
    np.testing.assert_allclose(z["mean"], raw[train].mean(0))
    np.testing.assert_array_equal(z["mask"], mask)


def test_shards_hold_each_trial_with_its_image_session_and_split(lab, built):
    paths, (out, made) = lab[1], built
    table = pd.read_csv(paths["trials"], dtype={"image": str}).sort_values(["session", "trial"]).reset_index(drop=True)
    stimuli = own_build.read_stimuli(out)
    split = nsd.open_split(out, 9, 2)
    rows = np.concatenate([split.train_behav, split.test_behav])
    row = rows[:, nsd.COL_GLOBAL_TRIAL].astype(int)
    assert sorted(row) == list(range(len(table))) and made["trials"] == len(table)
    assert (stimuli.image.to_numpy()[rows[:, 0].astype(int)] == table.image.to_numpy()[row]).all()
    assert (rows[:, nsd.COL_SESSION] == table.session.to_numpy()[row]).all()
    assert ((rows[:, nsd.COL_SHARED1000] == 1) == (table.split.to_numpy()[row] == "test")).all()
    assert len(split.train_behav) == (table.split == "train").sum()      # session 2 is shorter: both read
    assert (table.session.value_counts().to_numpy() != 60).any()


def test_context_rows_stop_at_a_session_boundary_of_unequal_sessions():
    b = np.zeros((7, nsd.BEHAV_COLUMNS))
    b[:, 5] = np.arange(7)
    session = np.array([0, 0, 0, 1, 1, 1, 1])             # 3 then 4 trials
    arrays = behaviour.context_arrays(b, session)
    assert arrays["past_behav"][2, :2, 5].tolist() == [1, 0] and (arrays["past_behav"][3] == -1).all()
    assert arrays["future_behav"][2].min() == -1 and (arrays["future_behav"][2] == -1).all()
    assert arrays["future_behav"][3, :3, 5].tolist() == [4, 5, 6]


def test_images_are_the_stimuli_cropped_and_resized_by_id(lab, built, tmp_path):
    from PIL import Image

    out = built[0]
    stimuli = own_build.read_stimuli(out)
    wide = tmp_path / "wide.png"
    photo = np.asarray(Image.open(stimuli.file[3]))
    Image.fromarray(np.concatenate([np.zeros_like(photo[:, :10]), photo, np.zeros_like(photo[:, :10])], 1)).save(wide)
    got = nsd.read_images(out, np.array([3]))[0].astype(np.float32)
    np.testing.assert_allclose(own_input.load_image(wide, 224, "bilinear", True), got, atol=2e-3)  # the crop drops the bars
    assert list(stimuli.image) == sorted(stimuli.image)


def test_hdf5_betas_with_declared_axes_give_the_same_layout(lab, built, tmp_path):
    paths = lab[1]
    h5 = []
    for f in paths["sessions"]:
        data = np.asarray(nib.load(f).dataobj)                            # X, Y, Z, T
        h5.append(tmp_path / (f.split("/")[-1].split(".")[0] + ".hdf5"))
        with h5py.File(h5[-1], "w") as out:
            out["vol"] = data.transpose(3, 2, 1, 0)                       # T, Z, Y, X as NSD's
    own_build.build(settings_of(paths, sessions=[str(p) for p in h5], key="vol", axes="TZYX"), 9, tmp_path / "o", RESIZE)
    with h5py.File(tmp_path / "o" / nsd.betas_file(9)) as a, h5py.File(built[0] / nsd.betas_file(9)) as b:
        np.testing.assert_array_equal(a["betas"][:], b["betas"][:])
    mask = nib.load(paths["mask"]).get_fdata() > 0
    data = np.asarray(nib.load(paths["sessions"][0]).dataobj)
    with h5py.File(tmp_path / "yxtz.mat", "w") as out:                   # any order; MATLAB v7.3's suffix
        out["b"] = data.transpose(1, 0, 3, 2)
    np.testing.assert_array_equal(own_input.read_volumes(tmp_path / "yxtz.mat", mask, "YXTZ", "b"), masked(
        paths["sessions"][0], mask))
    with pytest.raises(DataError, match="hdf5_axes = 'TXY', expected a permutation of 'TXYZ'"):
        own_input.volume_header(h5[0], "TXY", "vol")


# --------------------------------------------------------------------------- bad input, each named
def copy_lab(lab, tmp_path):
    dst = tmp_path / "lab"
    shutil.copytree(lab[0] / "lab", dst)
    return {k: (v.replace(str(lab[0] / "lab"), str(dst)) if isinstance(v, str) else
                [x.replace(str(lab[0] / "lab"), str(dst)) for x in v]) for k, v in lab[1].items()}


def edit_table(path, change):
    table = pd.read_csv(path, dtype={"image": str})
    change(table).to_csv(path, index=False)


def test_a_mask_on_another_grid_is_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    img = nib.load(paths["mask"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:-1], img.affine), paths["mask"])
    problems = own_input.problems(settings_of(paths))
    assert problems and "ses-01_betas.nii.gz: grid (X, Y, Z) = (14, 12, 10), but the mask" in problems[0]
    assert "has (13, 12, 10)" in problems[0]


def test_a_mask_with_another_affine_is_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    img = nib.load(paths["mask"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine * np.diag([1.5, 1, 1, 1])), paths["mask"])
    assert "differs from the mask" in own_input.problems(settings_of(paths))[0]


def test_a_table_with_fewer_trials_than_volumes_is_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    edit_table(paths["trials"], lambda t: t.drop(index=5))
    assert own_input.problems(settings_of(paths)) == [
        f"{paths['trials']}: session 1 lists 59 trial(s) (largest 60), but {paths['sessions'][0]} holds 60 volumes; "
        "expected one row per volume, trials 1..60"]


def test_an_image_id_without_a_file_is_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    first = pd.read_csv(paths["trials"], dtype={"image": str}).image[0]
    (tmp_path / "lab" / "stimuli" / f"{first}.png").unlink()
    [problem] = own_input.problems(settings_of(paths), images=paths["images"])
    assert f"no image file for id(s) ['{first}'] (1 of" in problem and problem.startswith(paths["images"])


def test_a_test_image_also_in_train_is_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    table = pd.read_csv(paths["trials"], dtype={"image": str})
    test_image = table.image[table.split == "test"].iloc[0]
    edit_table(paths["trials"], lambda t: t.assign(image=np.where(t.index == (t.split == "train").idxmax(),
                                                                  test_image, t.image)))
    [problem] = own_input.problems(settings_of(paths))
    assert f"image(s) ['{test_image}'] are both test and train" in problem and paths["trials"] in problem


def test_duplicated_trials_are_named(lab, tmp_path):
    paths = copy_lab(lab, tmp_path)
    edit_table(paths["trials"], lambda t: pd.concat([t, t.iloc[[4]]]))
    [problem] = own_input.problems(settings_of(paths))
    assert "trial 5 of session 1 is listed 2 times" in problem


@pytest.mark.parametrize("bad, said", [(np.nan, "hold NaN or Inf inside the mask"),
                                       (0.0, "are constant inside the mask (value 0.0)")])
def test_nan_or_blank_volumes_are_named_before_anything_is_written(lab, tmp_path, bad, said):
    paths = copy_lab(lab, tmp_path)
    img = nib.load(paths["sessions"][1])
    data = np.asarray(img.dataobj).copy()
    mask = nib.load(paths["mask"]).get_fdata() > 0
    vol = data[..., 11]
    inside = vol[mask]
    if np.isnan(bad):
        inside[3] = np.nan                       # one voxel of the volume
    else:
        inside[:] = bad                          # a blank volume
    vol[mask] = inside
    nib.save(nib.Nifti1Image(data, img.affine), paths["sessions"][1])
    with pytest.raises(DataError, match=f"ses-02_betas.nii.gz: volume\\(s\\) \\[12\\] \\(trial, 1-based\\) {said[:20]}"):
        own_build.build(settings_of(paths), 9, tmp_path / "out", RESIZE)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- predict's new volumes
def test_new_volumes_are_z_scored_with_the_training_statistics_and_grouped(lab, built, tmp_path):
    paths, out = lab[1], built[0]
    new = settings_of(paths, sessions=paths["new_sessions"], trials=paths["new_trials"])
    voxels.prepare(new, tmp_path / "v.hdf5", zscore="training", zscore_file=out / preprocess.zscore_file(9),
                   average_repeats=True)
    got = prepared.read(tmp_path / "v.hdf5")
    z = preprocess.read_zscore(out / preprocess.zscore_file(9))
    table = pd.read_csv(paths["new_trials"], dtype={"image": str})
    raw = masked(paths["new_sessions"][0], z["mask"])
    first = table.image[0]
    trials = np.flatnonzero(table.image == first)
    assert got["labels"][0] == first and got["images"][0] == first
    want = (raw[trials] - z["mean"]) / z["std"]
    np.testing.assert_allclose(got["voxels"][0], want[np.resize(np.arange(len(trials)), got["voxels"].shape[1])],
                               rtol=1e-5, atol=1e-5)
    assert len(got["labels"]) == table.image.nunique()


def test_session_z_score_and_single_trials_without_images(lab, tmp_path):
    paths = lab[1]
    table = tmp_path / "t.csv"
    pd.read_csv(paths["new_trials"])[["session", "trial"]].to_csv(table, index=False)
    new = settings_of(paths, sessions=paths["new_sessions"], trials=str(table))
    voxels.prepare(new, tmp_path / "v.hdf5", zscore="session", zscore_file=None, average_repeats=True)
    got = prepared.read(tmp_path / "v.hdf5")
    x = got["voxels"][:, 0]
    assert got["voxels"].shape[1] == 1 and got["labels"][:2] == ["s1-t1", "s1-t2"] and got["images"][0] == ""
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0, ddof=1), 1, atol=1e-4)


def test_new_volumes_with_another_mask_than_the_training_one_are_named(lab, built, tmp_path):
    paths = copy_lab(lab, tmp_path)
    img = nib.load(paths["mask"])
    data = np.asarray(img.dataobj).copy()
    data[np.unravel_index(np.flatnonzero(data.reshape(-1) > 0)[0], data.shape)] = 0
    nib.save(nib.Nifti1Image(data, img.affine), paths["mask"])
    new = settings_of(paths, sessions=paths["new_sessions"], trials=paths["new_trials"])
    with pytest.raises(DataError, match="39 voxels on grid .* but the model's training data used 40 voxels"):
        voxels.prepare(new, tmp_path / "v.hdf5", zscore="training",
                       zscore_file=built[0] / preprocess.zscore_file(9), average_repeats=True)


# --------------------------------------------------------------------------- predict's page
def test_the_page_shows_every_prediction_and_blends_the_blurry_branch_as_upstream(tmp_path):
    import torch
    from PIL import Image

    from fmri_recon.predict import page

    g = torch.Generator().manual_seed(0)
    recons, refined, blurry = (torch.rand(3, 3, 256, 256, generator=g) for _ in range(3))
    out = {"page": tmp_path / "index.html", "grid": tmp_path / "grid.png", "captions": tmp_path / "c.csv",
           "images": tmp_path / "images"}
    page.write(out, ["a", "b", "s1-t3"], recons, refined, ["x", "y", "z <b>"], None, blurry, title="t", blend=0.75)
    final = np.asarray(Image.open(tmp_path / "images" / "0001_final.png")).astype(np.float64) / 255
    want = (0.75 * refined[1] + 0.25 * blurry[1]).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(final, want, atol=1 / 255 + 1e-6)
    html = (tmp_path / "index.html").read_text()
    assert html.count("<tr><td>") == 3 and "z &lt;b&gt;" in html and "0002_blurry.png" in html and "_seen" not in html
    assert pd.read_csv(tmp_path / "c.csv").label.tolist() == ["a", "b", "s1-t3"]


def test_predict_may_pick_some_volumes_but_not_one_beyond_the_file(lab, built, tmp_path):
    paths = lab[1]
    table = tmp_path / "t.csv"
    pd.DataFrame({"session": [1, 1], "trial": [3, 60]}).to_csv(table, index=False)
    new = settings_of(paths, sessions=paths["new_sessions"], trials=str(table))
    voxels.prepare(new, tmp_path / "v.hdf5", zscore="training", zscore_file=built[0] / preprocess.zscore_file(9),
                   average_repeats=True)
    assert prepared.read(tmp_path / "v.hdf5")["labels"] == ["s1-t3", "s1-t60"]
    pd.DataFrame({"session": [1], "trial": [61]}).to_csv(table, index=False)
    assert own_input.problems(new, split=False, image=False) == [
        f"{table}: trial 61 of session 1, but {paths['new_sessions'][0]} holds 60 volumes"]
