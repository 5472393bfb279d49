"""CLIP targets: upstream's preprocessing quirk, its token space, a cache keyed by image id."""
import h5py
import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from fmri_recon.targets import clip_targets as ct
from fmri_recon.data import nsd
from fmri_recon.configuration import defaults

TARGETS = {**defaults("targets"), "device": "cpu"}

CLIP = {"arch": "tiny-ViT-bigG-14", "seq_dim": 256, "emb_dim": 64}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "clip.safetensors"
    ct.save_random_clip("tiny-ViT-bigG-14", path, seed=3)
    return path


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    with h5py.File(root / nsd.IMAGES_FILE, "w") as f:
        f["images"] = rng.random((12, 3, 224, 224)).astype(np.float16)
    return root


def test_quirk_maps_zero_one_images_to_upper_half():
    x = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 224, 2).contiguous()
    x = torch.nn.functional.pad(x, (0, 222))
    on = ct.preprocess(x, 224, zero_one_quirk=True)
    off = ct.preprocess(x, 224, zero_one_quirk=False)
    mean, std = torch.tensor(ct.CLIP_MEAN)[0], torch.tensor(ct.CLIP_STD)[0]
    assert torch.isclose(on[0, 0, 0, 0], (0.5 - mean) / std) and torch.isclose(on[0, 0, 0, 1], (1 - mean) / std)
    assert torch.isclose(off[0, 0, 0, 0], (0 - mean) / std)


def test_random_weights_load_strictly_and_reproducibly(weights, tmp_path):
    a = ct.load_vision("tiny-ViT-bigG-14", weights, "cpu", torch.float32)
    ct.save_random_clip("tiny-ViT-bigG-14", tmp_path / "again.safetensors", seed=3)
    b = ct.load_vision("tiny-ViT-bigG-14", tmp_path / "again.safetensors", "cpu", torch.float32)
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    ct.save_random_clip("tiny-ViT-B-32", tmp_path / "other.safetensors")
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        ct.load_vision("tiny-ViT-bigG-14", tmp_path / "other.safetensors", "cpu", torch.float32)


def test_both_token_spaces(weights):
    visual = ct.load_vision("tiny-ViT-bigG-14", weights, "cpu", torch.float32)
    x = ct.preprocess(torch.rand(2, 3, 224, 224), 224)
    pre = ct.encode_tokens(visual, x, "pre_ln_post")
    post = ct.encode_tokens(visual, x, "post_ln_post")
    assert pre.shape == (2, 256, 64) and not torch.allclose(pre, post)
    torch.testing.assert_close(post, visual.ln_post(pre))
    want = visual.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True)
    torch.testing.assert_close(pre, want["image_intermediates"][-1])   # the last block's tokens, CLS dropped
    assert visual.output_tokens is False                               # the model is left as it was


def test_default_token_space_is_upstreams_output_tokens(weights, images_dir, tmp_path):
    """MindEye2's targets are ``visual(x)`` with ``output_tokens=True`` under its pinned open_clip
    2.24.0, which applies ln_post to every token: the default must be that space, in the schema
    and in the real config."""
    assert defaults("targets")["token_norm"] == "post_ln_post"
    assert "token_norm" not in yaml.safe_load((REPO / "config.yaml").read_text()).get("targets", {})  # the real run keeps it
    ct.build_cache(np.array([3, 4]), images_dir, weights, tmp_path / "t.hdf5", CLIP, TARGETS)
    visual = ct.load_vision("tiny-ViT-bigG-14", weights, "cpu", torch.float32)
    visual.output_tokens = True
    imgs = torch.from_numpy(nsd.read_images(images_dir, np.array([3, 4])))
    want = visual(ct.preprocess(imgs, 224))[1].numpy()
    got = ct.TargetCache(tmp_path / "t.hdf5").get(np.array([3, 4])).astype(np.float32)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    assert ct.TargetCache(tmp_path / "t.hdf5").attrs["token_norm"] == "post_ln_post"


def test_cache_holds_each_image_once_keyed_by_id(weights, images_dir, tmp_path):
    out = tmp_path / "t.hdf5"
    info = ct.build_cache(np.array([9, 2, 5, 2]), images_dir, weights, out, CLIP, {**TARGETS, "batch_size": 2})
    assert info["images"] == 3 and info["zero_one_quirk"] is True
    cache = ct.TargetCache(out)
    assert cache.image_ids.tolist() == [2, 5, 9] and cache.shape == (256, 64)
    got = cache.get(np.array([9, 2, 9]))
    visual = ct.load_vision("tiny-ViT-bigG-14", weights, "cpu", torch.float32)
    imgs = torch.from_numpy(nsd.read_images(images_dir, np.array([9, 2])))
    want = ct.encode_tokens(visual, ct.preprocess(imgs, 224), TARGETS["token_norm"]).numpy()
    np.testing.assert_allclose(got[[0, 1]].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(got[0], got[2])
    with pytest.raises(KeyError, match=r"no tokens for image ids \[7\]"):
        cache.get(np.array([2, 7]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.hdf5"]


def test_token_shape_must_match_config(weights, images_dir, tmp_path):
    with pytest.raises(ValueError, match=r"clip_models: tiny-ViT-bigG-14 gives tokens \(256, 64\), but the config "
                                         r"says seq_dim x emb_dim = \(49, 768\)"):
        ct.build_cache(np.array([1]), images_dir, weights, tmp_path / "t.hdf5",
                       {**CLIP, "seq_dim": 49, "emb_dim": 768}, TARGETS)
    assert list(tmp_path.iterdir()) == []                    # neither the cache nor its temporary file
