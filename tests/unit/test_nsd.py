"""The reader of the pscotti/mindeyev2 layout: repeats, sorted-unique reads, clear errors."""
import h5py
import numpy as np
import pytest

import foreign_dataset
from fmri_recon.data import nsd


def test_paths_are_the_hub_layout():
    assert nsd.required_files(1, 2) == [
        "betas_all_subj01_fp32_renorm.hdf5", "wds/subj01/train/0.tar", "wds/subj01/train/1.tar",
        "wds/subj01/new_test/0.tar", "coco_images_224_float16.hdf5", "evals/all_images.pt",
        "evals/all_captions.pt", "evals/all_git_generated_captions.pt"]
    assert nsd.test_tar(7, new_test=False) == "wds/subj07/test/0.tar"


def test_repeat_rule_follows_upstream():
    behav = -np.ones((6, 17))
    behav[:, 0] = [7, 3, 7, 5, 3, 3]        # image 7 twice, 3 three times, 5 once
    ids, pos = nsd.test_repeats(behav)
    assert ids.tolist() == [3, 5, 7]
    assert pos.tolist() == [[1, 4, 5], [3, 3, 3], [0, 2, 0]]   # 3 reps as is, 1 -> x3, 2 -> [a,b,a]


def test_more_than_three_repeats_is_an_error():
    behav = -np.ones((4, 17))
    behav[:, 0] = 9
    with pytest.raises(nsd.DataError, match="image 9 has 4 test trials"):
        nsd.test_repeats(behav, "x.tar")


def test_read_rows_any_order_with_repeats(tmp_path):
    path = tmp_path / "b.hdf5"
    data = np.arange(50, dtype=np.float32).reshape(10, 5)
    with h5py.File(path, "w") as f:
        f["betas"] = data
    rows = nsd.read_rows(path, "betas", np.array([7, 2, 7, 0]))
    np.testing.assert_array_equal(rows, data[[7, 2, 7, 0]])
    with pytest.raises(nsd.DataError, match="row 10 requested"):
        nsd.read_rows(path, "betas", np.array([10]))


def test_foreign_dataset_reads_as_written(tmp_path):
    truth = foreign_dataset.write(tmp_path)
    split = nsd.open_split(tmp_path, foreign_dataset.SUBJECT, foreign_dataset.SESSIONS)
    nsd.check_evals(split)
    assert split.num_voxels == foreign_dataset.VOXELS                  # read from the data
    assert split.num_images == foreign_dataset.IMAGES
    assert split.test_images.tolist() == truth["test_ids"].tolist()
    assert split.repeat_counts == {1: 1, 2: 5}
    shared = truth["behav"][:, 16] == 1
    assert len(split.train_behav) == (~shared).sum()
    # every image's three rows are trials of that image, 2 repeats -> [a, b, a]
    img_of_row = truth["behav"][:, 0]
    assert (img_of_row[split.test_trials] == split.test_images[:, None]).all()
    two = split.test_trials[0]
    assert two[0] == two[2] != two[1]
    vox = nsd.read_voxels(tmp_path, foreign_dataset.SUBJECT, split.test_trials.ravel())
    assert vox.shape == (3 * len(split.test_images), foreign_dataset.VOXELS) and vox.dtype == np.float32
    imgs = nsd.read_images(tmp_path, split.test_images[::-1])
    np.testing.assert_array_equal(imgs, truth["images"][split.test_images[::-1]])


def test_missing_file_is_named(tmp_path):
    foreign_dataset.write(tmp_path)
    (tmp_path / "wds/subj05/train/1.tar").unlink()
    with pytest.raises(nsd.DataError, match=r"wds/subj05/train/1.tar: file not found"):
        nsd.open_split(tmp_path, 5, 2)


def test_wrong_hdf5_dataset_name_is_named(tmp_path):
    foreign_dataset.write(tmp_path, betas_name="data")
    with pytest.raises(nsd.DataError, match=r"betas_all_subj05_fp32_renorm.hdf5: no HDF5 dataset 'betas' \(found \['data'\]\)"):
        nsd.open_split(tmp_path, 5, 2)


def test_betas_that_do_not_match_the_tars(tmp_path):
    foreign_dataset.write(tmp_path, betas_rows=50)   # the tars reference trials up to 79
    with pytest.raises(nsd.DataError, match=r"'betas' has 50 trial rows but the tars of subject 5 reference "
                                            r"global trial 79"):
        nsd.open_split(tmp_path, 5, 2)


def test_truncated_tar_is_named(tmp_path):
    foreign_dataset.write(tmp_path)
    tar = tmp_path / "wds/subj05/new_test/0.tar"
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2 + 100])
    with pytest.raises(nsd.DataError, match=r"new_test/0.tar: unreadable or truncated tar"):
        nsd.open_split(tmp_path, 5, 2)


def test_tar_cut_between_samples_is_named(tmp_path):
    foreign_dataset.write(tmp_path)
    tar = tmp_path / "wds/subj05/train/0.tar"
    data = tar.read_bytes()
    cut = data.index(b"sample000000003.past_behav.npy") - 0   # a header boundary inside sample 3
    tar.write_bytes(data[: cut - cut % 512])
    with pytest.raises(nsd.DataError, match=r"train/0.tar: sample sample000000003 has no past_behav.npy"):
        nsd.read_tar(tar)


def test_wrong_array_shape_is_named(tmp_path):
    behav = -np.ones((2, 17))
    foreign_dataset.write_tar(tmp_path / "x.tar", behav)
    samples = nsd.read_tar(tmp_path / "x.tar")
    assert samples["behav"].shape == (2, 1, 17) and samples["olds_behav"].shape == (2, 3, 17)
    with pytest.raises(ValueError, match=r"behav: expected shape \(2, 1, 17\)"):
        nsd.write_tar(tmp_path / "y.tar", {**samples, "behav": samples["behav"][:, 0]})
    assert not (tmp_path / "y.tar").exists()


def test_betas_holding_nan_or_inf_are_named_with_their_rows(tmp_path):
    foreign_dataset.write(tmp_path)
    split = nsd.open_split(tmp_path, 5, 2)
    nsd.check_finite_betas(split)                                       # clean data passes
    bad = sorted([int(split.train_trials[3]), int(split.test_trials[1, 0])])
    with h5py.File(tmp_path / "betas_all_subj05_fp32_renorm.hdf5", "a") as f:
        f["betas"][bad[0], 7] = np.nan
        f["betas"][bad[1], 0] = np.inf
    with pytest.raises(nsd.DataError, match=rf"betas_all_subj05_fp32_renorm.hdf5: 'betas' rows \[{bad[0]}, {bad[1]}\] "
                                            r"\(2 rows\) hold NaN or Inf"):
        nsd.check_finite_betas(split, chunk=4)


def test_every_rank_of_a_multi_process_training_reads_the_whole_tar(tmp_path, monkeypatch):
    """Under torchrun (RANK/WORLD_SIZE set) webdataset would refuse a tar without a node split;
    each rank needs every trial, so read_tar reads it whole, as one process does."""
    foreign_dataset.write(tmp_path)
    tar = tmp_path / "wds/subj05/train/0.tar"
    alone = nsd.read_tar(tar)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ranked = nsd.read_tar(tar)
    assert ranked.keys() == alone.keys() and all(np.array_equal(ranked[k], alone[k]) for k in alone)
