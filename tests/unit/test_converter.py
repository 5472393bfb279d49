"""Converters between CLIP spaces: learn a known linear map, report held-out quality, load strictly."""
import numpy as np
import pytest
import torch

from fmri_recon.decode import converter


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
    model, report = converter.fit(x, y, held, epochs=150, lr=1e-2, batch_size=64)
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


def upstream_converter(seq_in, emb_in, seq_out, emb_out):
    """Upstream's CLIPConverter as recon_inference.ipynb defines it (written out for the test)."""
    class CLIPConverter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear1 = torch.nn.Linear(seq_in, seq_out)
            self.linear2 = torch.nn.Linear(emb_in, emb_out)

        def forward(self, x):
            x = x.permute(0, 2, 1)
            x = self.linear1(x)
            return self.linear2(x.permute(0, 2, 1))
    return CLIPConverter()


def test_upstreams_released_converter_loads_strictly_and_computes_the_same(tmp_path):
    torch.manual_seed(0)
    theirs = upstream_converter(16, 12, 17, 8)
    path = tmp_path / "bigG_to_L_epoch8.pth"
    torch.save({"model_state_dict": theirs.state_dict()}, path)         # upstream's file layout
    ours = converter.load(path)
    assert ours.shape == {"s_in": 16, "e_in": 12, "s_out": 17, "e_out": 8}
    x = torch.randn(3, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_a_wrong_upstream_file_is_named(tmp_path):
    state = upstream_converter(16, 12, 17, 8).state_dict()
    state["linear3.weight"] = torch.zeros(1)
    torch.save({"model_state_dict": state}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match=r"c.pth: expected upstream's CLIPConverter keys .*linear3.weight"):
        converter.load(tmp_path / "c.pth")
