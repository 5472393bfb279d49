"""Brain correlation (docs/upstream.md §5.6): GNet8's layout, the Pearson score, the masks file."""

import h5py
import numpy as np
import pytest
import torch

from fmri_recon.evaluate.metrics import brain as B
from fmri_recon.data.synthetic import write_masks

SMALL = B.GNet8Config(input_size=67)      # feature maps 5x5 and 3x3 instead of 25x25 and 13x13


# --------------------------------------------------------------------------- GNet8

def test_feature_map_sizes_of_upstream_input():
    assert B.feature_map_sizes(227) == (25, 13)
    assert B.feature_map_sizes(67) == (5, 3)


def test_gnet8_forward_shape_small_input():
    model = B.GNet8Encoder({1: 40, 5: 7}, SMALL)
    x = torch.rand(3, 3, 67, 67)
    with torch.inference_mode():
        assert model(x, 1).shape == (3, 40)
        assert model(x, 5).shape == (3, 7)
    with pytest.raises(KeyError, match="no readout for subject 2"):
        model(x, 2)


def test_predict_voxels_resizes_any_image_to_the_input_size():
    model = B.GNet8Encoder({1: 12}, SMALL)
    y = B.predict_voxels(model, torch.rand(5, 3, 40, 50), 1, batch_size=2)
    assert y.shape == (5, 12) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_preprocess_is_upstreams_pil_pipeline():
    from PIL import Image
    from torchvision import transforms

    x = torch.rand(2, 3, 30, 40)
    ref = np.stack([np.asarray(transforms.ToPILImage()(im).resize((227, 227), Image.Resampling.LANCZOS),
                               dtype=np.float32) / 255.0 for im in x]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(B.preprocess(x).numpy(), ref)


def test_parameter_names_and_shapes_match_upstream_layout():
    model = B.GNet8Encoder({1: 9})       # the real 227 input: 25x25 and 13x13 fields
    shared = model.shared.state_dict()
    assert shared["mu"].shape == (1, 3, 1, 1)
    assert shared["pre.conv1.0.weight"].shape == (64, 3, 11, 11)
    assert shared["pre.conv2.0.weight"].shape == (192, 64, 5, 5)
    assert shared["enc.conv3.weight"].shape == (128, 192, 3, 3)
    assert shared["enc.bn1.running_var"].shape == (192,)
    assert shared["enc.conv4a.conv1.weight"].shape == (256, 128, 3, 3)
    assert shared["enc.conv4a.bn1.weight"].shape == (128,)
    for block in ("conv5a", "conv6a", "conv4b", "conv5b"):
        assert shared[f"enc.{block}.conv1.weight"].shape == (256, 256, 3, 3)
    assert shared["enc.conv6b.conv1.weight"].shape == (64, 256, 3, 3)
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = {"mu", *(f"pre.{c}.0.{p}" for c in ("conv1", "conv2") for p in ("weight", "bias")),
                "enc.conv3.weight", "enc.conv3.bias", *(f"enc.bn1.{p}" for p in bn)}
    for block in ("conv4a", "conv5a", "conv6a", "conv4b", "conv5b", "conv6b"):
        expected |= {f"enc.{block}.conv1.weight", f"enc.{block}.conv1.bias", *(f"enc.{block}.bn1.{p}" for p in bn)}
    assert set(shared) == expected
    readout = {k: tuple(v.shape) for k, v in model.fwrfs["1"].state_dict().items()}
    assert readout == {"rf0": (9, 25, 25), "rf1": (9, 13, 13), "w": (9, 512), "b": (9,)}


def test_load_upstream_checkpoint_layout(tmp_path):
    src = B.GNet8Encoder({1: 6, 2: 4}, seed=3)
    ckpt = {"best_params": {"enc": src.shared.state_dict(),
                            "fwrfs": {s: src.fwrfs[str(s)].state_dict() for s in (1, 2)}},
            "input_mean": np.full((1, 3, 1, 1), 0.45, np.float32),
            "val_cc": {1: np.zeros(6), 2: np.zeros(4)}}
    ckpt["best_params"]["enc"]["mu"] = torch.full((1, 3, 1, 1), 0.45)
    torch.save(ckpt, tmp_path / "gnet_multisubject.pt")
    model = B.GNet8Encoder.load_upstream(tmp_path / "gnet_multisubject.pt", subjects=[2])
    assert model.subjects == {2: 4}
    torch.testing.assert_close(model.fwrfs["2"].w, src.fwrfs["2"].w)
    x = torch.rand(2, 3, 227, 227)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, 2), src(x - 0.45, 2))      # mu is subtracted first
    with pytest.raises(KeyError, match=r"subject\(s\) \[7\]"):
        B.GNet8Encoder.load_upstream(tmp_path / "gnet_multisubject.pt", subjects=[7])
    with pytest.raises(FileNotFoundError, match="gnet_multisubject"):
        B.GNet8Encoder.load_upstream(tmp_path / "missing.pt")


# --------------------------------------------------------------------------- correlation

def test_identical_and_negated_responses():
    rng = np.random.default_rng(0)
    measured = rng.normal(size=(6, 50))
    masks = {"nsd_general": np.ones(50, bool), "V1": np.arange(50) < 10, "higher_vis": np.arange(50) >= 10}
    same = B.brain_correlation(measured.copy(), measured, masks)
    assert list(same) == list(masks)
    assert all(v == pytest.approx(1.0) for v in same.values())
    neg = B.brain_correlation(-measured, measured, masks)
    assert all(v == pytest.approx(-1.0) for v in neg.values())


def test_three_voxel_case_by_hand():
    # image 0: pred (1,2,3) vs measured (1,3,2): centred (-1,0,1)·(-1,1,0) = 1, norms sqrt(2)*sqrt(2) -> r = 0.5
    # image 1: pred (0,0,1) vs measured (2,1,0): centred (-1/3,-1/3,2/3)·(1,0,-1) = -1,
    #          norms sqrt(2/3)*sqrt(2) -> r = -sqrt(3)/2
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    measured = torch.tensor([[1.0, 3.0, 2.0], [2.0, 1.0, 0.0]])
    r = B.brain_correlation(pred, measured, {"all": np.ones(3, bool), "two": np.array([True, True, False])})
    assert r["all"] == pytest.approx((0.5 - np.sqrt(3) / 2) / 2)
    # on the first two voxels: image 0 (1,2) vs (1,3) -> 1; image 1 (0,0) constant -> NaN, as torchmetrics
    assert np.isnan(r["two"])


def test_matches_numpy_corrcoef_per_image():
    rng = np.random.default_rng(1)
    pred, measured = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    mask = rng.random(30) < 0.5
    expected = np.mean([np.corrcoef(pred[i, mask], measured[i, mask])[0, 1] for i in range(4)])
    assert B.brain_correlation(pred, measured, {"r": mask})["r"] == pytest.approx(expected)


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="must both be"):
        B.brain_correlation(np.zeros((2, 5)), np.zeros((2, 4)), {})
    with pytest.raises(ValueError, match="mask 'V1'"):
        B.brain_correlation(np.zeros((2, 5)), np.zeros((2, 5)), {"V1": np.ones(4, bool)})


# --------------------------------------------------------------------------- masks file

def test_synthetic_masks_round_trip(tmp_path):
    path = write_masks(tmp_path / "brain_region_masks.hdf5", [1, 2], [100, 60])
    masks = B.read_masks(path, 1)
    assert list(masks) == list(B.REGIONS)
    assert all(m.dtype == bool and m.shape == (100,) for m in masks.values())
    assert masks["nsd_general"].all()
    parts = np.stack([masks[r] for r in ("V1", "V2", "V3", "V4", "higher_vis")])
    assert (parts.sum(0) == 1).all()              # disjoint and covering
    assert B.read_masks(path, "subj02")["V1"].shape == (60,)
    with h5py.File(path) as f:
        assert sorted(f) == ["subj01", "subj02"]


def test_missing_group_or_region_is_a_clear_error(tmp_path):
    path = write_masks(tmp_path / "m.hdf5", [1], 40)
    with pytest.raises(KeyError, match=r"no group 'subj05' \(has \['subj01'\]\)"):
        B.read_masks(path, 5)
    with h5py.File(path, "a") as f:
        del f["subj01/V4"]
    with pytest.raises(KeyError, match=r"lacks dataset\(s\) \['V4'\]"):
        B.read_masks(path, 1)
    with pytest.raises(FileNotFoundError, match="brain region masks not found"):
        B.read_masks(tmp_path / "nope.hdf5", 1)


def test_integer_masks_are_accepted_and_other_values_rejected(tmp_path):
    path = tmp_path / "m.hdf5"
    with h5py.File(path, "w") as f:
        g = f.create_group("subj01")
        for r in B.REGIONS:
            g.create_dataset(r, data=np.array([1, 0, 1], np.uint8))
    assert B.read_masks(path, 1)["V2"].tolist() == [True, False, True]
    with h5py.File(path, "a") as f:
        f["subj01/V3"][0] = 2
    with pytest.raises(ValueError, match="values other than 0/1"):
        B.read_masks(path, 1)
