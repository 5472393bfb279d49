"""The experiment key ``normalisation``: all_sessions reads the betas file as it is; train_sessions
re-standardises every voxel with the mean and std (ddof=1) of the run's own train trials, which
equals z-scoring the raw betas with them (the file is per voxel affine in the raw betas). Every
expectation is computed by hand with numpy over the rows it names."""
import json

import h5py
import numpy as np
import pytest
import yaml
from snakemake.utils import validate

import foreign_dataset
from fmri_recon import configuration, experiment
from fmri_recon.data import normalise, nsd
from test_config_keys import REPO, SCHEMA, demo_config, merged

S = foreign_dataset.SUBJECT


@pytest.fixture
def layout(tmp_path):
    """A 2-session layout whose betas file is built as the released one is: raw betas (per-voxel
    offsets and scales, and a drift in session 2, so that one session's statistics differ from
    all sessions') z-scored with the mean and std (ddof=1) of the train trials of ALL sessions."""
    truth = foreign_dataset.write(tmp_path, masks=False)
    behav = truth["behav"]
    rng = np.random.default_rng(11)
    n, v = len(behav), foreign_dataset.VOXELS
    raw = rng.normal(size=(n, v)) * rng.uniform(0.5, 4.0, v) + rng.uniform(-20, 20, v)
    raw += (behav[:, 2] == 2)[:, None] * rng.uniform(-3, 3, v)            # session 2 drifts
    train_all = behav[:, 5][behav[:, 16] == 0].astype(int)
    renorm = ((raw - raw[train_all].mean(0)) / raw[train_all].std(0, ddof=1)).astype(np.float32)
    write_betas(tmp_path, renorm)
    session1_train = behav[:, 5][(behav[:, 16] == 0) & (behav[:, 2] == 1)].astype(int)
    return {"root": tmp_path, "raw": raw, "renorm": renorm, "behav": behav, "train_all": train_all,
            "session1_train": session1_train}


def write_betas(root, betas):
    with h5py.File(root / nsd.betas_file(S), "w") as f:
        f["betas"] = betas


def by_hand(values, rows, ddof=1):
    x = np.asarray(values, dtype=np.float64)
    return (x - x[rows].mean(0)) / x[rows].std(0, ddof=ddof)


def close(a, b):
    return np.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_train_sessions_is_the_first_sessions_train_trials_zscore(layout):
    split = nsd.open_split(layout["root"], S, 1, normalisation="train_sessions")
    np.testing.assert_array_equal(np.sort(split.train_trials), layout["session1_train"])
    want = by_hand(layout["renorm"], layout["session1_train"])
    rows = np.arange(len(layout["behav"]))
    np.testing.assert_allclose(split.voxels(split.train_trials), want[split.train_trials], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split.test_voxels(), want[split.test_trials], rtol=1e-5, atol=1e-5)
    assert split.voxels(rows).dtype == np.float32 and split.test_voxels().dtype == np.float32
    # the check tells the wrong choices apart: std with N, all sessions' rows, test rows among them
    test_rows = split.test_trials.ravel()
    session1 = layout["behav"][:, 5][layout["behav"][:, 2] == 1].astype(int)
    for wrong in (by_hand(layout["renorm"], layout["session1_train"], ddof=0),
                  by_hand(layout["renorm"], layout["train_all"]),
                  by_hand(layout["renorm"], session1)):
        assert not close(split.voxels(rows), wrong[rows])
    assert not close(split.test_voxels(), layout["renorm"][test_rows].reshape(split.test_voxels().shape))


def test_all_sessions_reads_the_file_as_it_is(layout):
    split = nsd.open_split(layout["root"], S, 1)
    assert split.normalisation == "all_sessions"
    rows = np.array([5, 0, 5, 63, 12])
    np.testing.assert_array_equal(split.voxels(rows), layout["renorm"][rows])
    np.testing.assert_array_equal(split.test_voxels(), layout["renorm"][split.test_trials])


def test_restandardising_the_released_file_is_zscoring_the_raw_betas(layout):
    # the affine-invariance claim: the file's train-session z-score is the raw betas' one
    split = nsd.open_split(layout["root"], S, 1, normalisation="train_sessions")
    rows = np.arange(len(layout["behav"]))
    np.testing.assert_allclose(split.voxels(rows), by_hand(layout["raw"], layout["session1_train"]),
                               rtol=1e-5, atol=1e-5)


def test_train_sessions_over_every_session_is_the_release_again(layout):
    split = nsd.open_split(layout["root"], S, foreign_dataset.SESSIONS, normalisation="train_sessions")
    rows = np.arange(len(layout["behav"]))
    np.testing.assert_allclose(split.voxels(rows), layout["renorm"], rtol=1e-5, atol=1e-5)


def test_statistics_are_read_in_chunks_and_once_per_split(layout, monkeypatch):
    path = layout["root"] / nsd.betas_file(S)
    rows = layout["session1_train"]
    x = layout["renorm"][rows].astype(np.float64)
    for chunk in (1, 3, 7, 1024):
        mean, std = normalise.train_statistics(path, rows[::-1], chunk)
        np.testing.assert_allclose(mean, x.mean(0), atol=1e-12)
        np.testing.assert_allclose(std, x.std(0, ddof=1), rtol=1e-12)
    calls = []
    real = normalise.train_statistics
    monkeypatch.setattr(normalise, "train_statistics", lambda *a, **k: calls.append(a) or real(*a, **k))
    split = nsd.open_split(layout["root"], S, 1, normalisation="train_sessions")
    split.voxels(split.train_trials)
    split.test_voxels()
    assert len(calls) == 1


def test_a_constant_voxel_is_an_error_naming_file_subject_and_voxel(layout):
    betas = layout["renorm"].copy()
    betas[layout["session1_train"], 7] = 0.25          # constant over session 1's train trials only
    write_betas(layout["root"], betas)
    np.testing.assert_array_equal(nsd.open_split(layout["root"], S, 1).voxels(np.arange(3)), betas[:3])
    with pytest.raises(nsd.DataError, match=rf"{nsd.betas_file(S)}: voxel 7 .*subject {S}.* constant"):
        nsd.open_split(layout["root"], S, 1, normalisation="train_sessions").test_voxels()
    nsd.open_split(layout["root"], S, 2, normalisation="train_sessions").test_voxels()   # not over 2 sessions


def test_an_unknown_normalisation_names_the_allowed_ones(layout):
    with pytest.raises(ValueError, match="'per_session': expected one of all_sessions, train_sessions"):
        nsd.open_split(layout["root"], S, 1, normalisation="per_session")


def test_the_stages_after_training_read_the_voxels_as_the_experiment_was_trained():
    config = demo_config({"experiments": {"own": {"normalisation": "train_sessions", "num_sessions": 2}}})
    assert experiment.voxel_reading(config, "own") == {"num_sessions": 2, "normalisation": "train_sessions"}
    assert experiment.voxel_reading(config, "upper_bound_bigG") == {"num_sessions": config["num_sessions"],
                                                                    "normalisation": "all_sessions"}
    assert json.loads(experiment.train_params(config, "own"))["normalisation"] == "train_sessions"
    other = next(e for e in config["experiments"] if e != "own")
    assert json.loads(experiment.train_params(config, other))["normalisation"] == "all_sessions"


def test_sweep_yaml_measures_the_one_hour_number_both_ways():
    config = merged(yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load((REPO / "sweep.yaml").read_text()))
    validate(config, str(SCHEMA))
    points = configuration.expand_sweeps(config)["normalisation"]
    assert configuration.check(config) == []
    settings = {p["name"]: experiment.resolve(config, p["name"]) for p in points}
    own = [n for n, s in settings.items() if s["normalisation"] == "train_sessions"]
    assert len(own) == 3 and {settings[n]["seed"] for n in own} == {42, 43, 44}
    assert all(settings[n]["num_sessions"] == 1 for n in settings)          # the one-hour model, both ways
    paper = sorted(n for n in settings if n not in own)                     # upstream's: explore's own seeds
    assert "explore" in paper and len(paper) == 3
