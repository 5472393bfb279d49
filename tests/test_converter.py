"""Converters between CLIP spaces: learn a known linear map, report held-out quality, load strictly."""
import numpy as np
import pytest
import torch

from fmri_recon import converter


def linear_pair(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 5)).astype(np.float32)
    a, b = rng.standard_normal((6, 9)), rng.standard_normal((5, 4))
    y = np.einsum("nse,st,ef->ntf", x, a, b).astype(np.float32)     # token map then feature map
    return x, y


def test_learns_a_linear_map_and_reports_held_out_images(tmp_path):
    x, y = linear_pair()
    held = np.zeros(len(x), bool)
    held[:40] = True
    model, report = converter.fit(x, y, held, epochs=150, lr=1e-2)
    assert report["held_out"]["n_images"] == 40 and report["train"]["n_images"] == 160
    assert report["held_out"]["r2"] > 0.95 and report["held_out"]["identification_top1"] > 0.9
    converter.save(model, tmp_path / "c.pt", report)
    again = converter.load(tmp_path / "c.pt")
    with torch.no_grad():
        assert torch.equal(again(torch.from_numpy(x[:3])), model(torch.from_numpy(x[:3])))
    assert torch.load(tmp_path / "c.pt", weights_only=True)["report"]["held_out"]["r2"] == report["held_out"]["r2"]


def test_quality_of_a_constant_prediction_is_poor():
    x, y = linear_pair()
    q = converter.quality(torch.zeros(len(y), 9, 4) + torch.from_numpy(y).mean(0), torch.from_numpy(y))
    assert q["r2"] == pytest.approx(0.0, abs=1e-5) and q["identification_top1"] <= 0.05


def test_wrong_input_shape_is_named():
    model = converter.TokenConverter(49, 768, 256, 1664)
    with pytest.raises(ValueError, match=r"converter expects tokens \(49, 768\), got \(256, 1664\)"):
        model(torch.zeros(1, 256, 1664))
