"""The synthetic dataset: the exact published layout, natural images, learnable voxels."""
import numpy as np
import pytest

from fmri_recon.data import nsd, synthetic

CFG = synthetic.SyntheticConfig(seed=1, subjects=[1, 2], num_voxels=[200, 150], num_sessions=2,
                                trials_per_session=120, num_images=160, num_test_images=20, noise=0.5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_dataset(CFG, root)
    return root


def test_writes_every_file_of_the_layout(data_dir):
    written = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())
    assert written == sorted(synthetic.files(CFG))
    assert not list(data_dir.rglob(".*tmp*"))                  # no temporary files left


def test_formats_match_the_hub(data_dir):
    for subject, n_vox in [(1, 200), (2, 150)]:
        split = nsd.open_split(data_dir, subject, 2)
        nsd.check_evals(split)
        assert split.num_voxels == n_vox and split.num_images == 160
        assert set(split.repeat_counts) >= {1, 2, 3}           # some test images have fewer repeats
        assert len(split.test_images) == 20
        b = split.train_behav
        assert (b[:, nsd.COL_SUBJECT] == subject).all() and (b[:, nsd.COL_SHARED1000] == 0).all()
        assert ((b[:, nsd.COL_GLOBAL_TRIAL] // 120 + 1) == b[:, nsd.COL_SESSION]).all()
    tar = nsd.read_tar(data_dir / nsd.train_tar(1, 0))
    assert tar["past_behav"].shape[1:] == (15, 17) and tar["past_behav"][0].max() == -1  # first trial: no past
    shape, dtype = nsd.h5_dataset_info(data_dir / nsd.IMAGES_FILE, "images", 4)
    assert shape == (160, 3, 224, 224) and dtype == np.float16
    shape, dtype = nsd.h5_dataset_info(data_dir / nsd.betas_file(2), "betas", 2)
    assert shape == (240, 150) and dtype == np.float32


def test_old_test_set_leaves_out_the_last_session(data_dir):
    old = nsd.read_tar(data_dir / nsd.test_tar(1, new_test=False))["behav"][:, 0]
    new = nsd.read_tar(data_dir / nsd.test_tar(1, new_test=True))["behav"][:, 0]
    assert 0 < len(old) < len(new) and (old[:, nsd.COL_SESSION] < 2).all()


def test_images_are_photographs_not_noise(data_dir):
    imgs = nsd.read_images(data_dir, np.arange(20)).astype(np.float32)
    assert imgs.min() >= 0 and imgs.max() <= 1
    # natural images are smooth: neighbouring pixels correlate strongly; noise would give ~0
    a, b = imgs[..., :-1].ravel(), imgs[..., 1:].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8
    captions = nsd.load_eval(data_dir, nsd.EVAL_CAPTIONS)
    assert all(isinstance(c, str) and len(c.split()) >= 4 for c in captions)


def test_voxels_are_learnable_from_image_features(data_dir):
    """Ridge from voxels to the encoding model's features identifies held-out test images."""
    split = nsd.open_split(data_dir, 1, 2)
    feats = synthetic.image_features(nsd.read_images(data_dir, np.arange(160)).astype(np.float32))
    x = nsd.read_voxels(data_dir, 1, split.train_trials)
    y = feats[split.train_images]
    w = np.linalg.solve(x.T @ x + 10 * np.eye(x.shape[1]), x.T @ y)
    pred = nsd.read_voxels(data_dir, 1, split.test_trials.ravel()).reshape(-1, 3, 200).mean(1) @ w
    truth = feats[split.test_images]
    corr = np.corrcoef(pred, truth)[:20, 20:]
    top1 = (corr.argmax(1) == np.arange(20)).mean()
    assert top1 > 5 / 20                                       # chance is 1/20


def test_config_that_cannot_fit_is_refused():
    bad = synthetic.SyntheticConfig(num_sessions=1, trials_per_session=50, num_images=100, num_test_images=30)
    with pytest.raises(ValueError, match="cannot hold"):
        synthetic.schedule(bad, np.arange(30), np.arange(30, 100), np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_voxels has 1 entries for 2 subjects"):
        synthetic.SyntheticConfig(subjects=[1, 2], num_voxels=[10])
