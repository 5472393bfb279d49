"""The blurry branch: its frozen VAE and ConvNeXt teacher, their cache, its loss, and its training."""
import logging

import h5py
import numpy as np
import pytest
import torch

from fmri_recon.data import nsd
from fmri_recon.targets import lowlevel
from fmri_recon.train import checkpoint, loop, losses
from fmri_recon.targets.clip_targets import TargetCache
from fmri_recon.train.dataset import ImagesInMemory, ImagesOnDisk, LowLevelData

from tiny_training import fake_data, tiny_cfg, tiny_tc


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return lowlevel.save_random(tmp_path_factory.mktemp("lowlevel"), seed=1)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    with h5py.File(root / nsd.IMAGES_FILE, "w") as f:
        f["images"] = np.random.default_rng(0).random((6, 3, 224, 224)).astype(np.float16)
    return root


# --------------------------------------------------------------------------- frozen models
def test_teacher_round_trips_through_the_vicregl_layout(weights, tmp_path, caplog):
    teacher = lowlevel.load_teacher(weights["teacher"], tiny=True)
    keys = torch.load(weights["teacher"])["model"]
    assert "module.backbone.downsample_layers.0.0.weight" in keys and "module.backbone.stages.3.0.dwconv.weight" in keys
    assert "module.backbone.norm.weight" in keys and "module.maps_projector.6.weight" in keys
    x = lowlevel.normalise(torch.rand(2, 3, 224, 224))
    assert teacher(x).shape == (2, 49, 512)
    # VICRegL's file holds heads the teacher does not use: ignored and named, as upstream does.
    extra = dict(keys, **{"module.projector.0.weight": torch.zeros(3)})
    torch.save({"model": extra}, tmp_path / "extra.pth")
    with caplog.at_level(logging.WARNING, logger="fmri_recon.targets.lowlevel"):
        again = lowlevel.load_teacher(tmp_path / "extra.pth", tiny=True)
    assert "projector.0.weight" in caplog.text
    torch.testing.assert_close(again(x), teacher(x), rtol=0, atol=0)
    # A missing weight is an error (upstream's try/except would silently keep a random teacher).
    torch.save({"model": {k: v for k, v in keys.items() if "stages.2" not in k}}, tmp_path / "cut.pth")
    with pytest.raises(ValueError, match=r"cut.pth: the teacher's backbone lacks \d+ weights, e.g. \['stages.2"):
        lowlevel.load_teacher(tmp_path / "cut.pth", tiny=True)


def test_real_sizes_match_upstream():
    assert sum(p.numel() for p in lowlevel.build_vae().parameters()) == 83_653_863      # "SD VAE (84M)"
    teacher = lowlevel.build_teacher()
    assert teacher.backbone.stages[3].blocks[0].conv_dw.weight.shape == (2048, 1, 7, 7)
    assert [len(s.blocks) for s in teacher.backbone.stages] == [3, 3, 27, 3]


def test_vae_latents_and_blurry_decode(weights, tmp_path):
    vae = lowlevel.load_vae(weights["vae"], tiny=True)
    images = torch.rand(2, 3, 224, 224)
    z = lowlevel.encode_latents(vae, images)
    assert z.shape == (2, 4, 28, 28)
    torch.testing.assert_close(z, vae.encode(2 * images - 1).latent_dist.mode() * 0.18215)
    out = lowlevel.decode_latents(vae, z)
    assert out.shape == (2, 3, 224, 224) and out.min() >= 0 and out.max() <= 1
    torch.save({"encoder.conv_in.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="wrong.pth: not a state dict of the tiny AutoencoderKL"):
        lowlevel.load_vae(tmp_path / "wrong.pth", tiny=True)


def test_blur_augs_draw_per_image():
    torch.manual_seed(0)
    images = torch.rand(1, 3, 224, 224).expand(16, -1, -1, -1).contiguous()
    out = lowlevel.blur_augs()(images)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert len({round(float(o.sum()), 2) for o in out}) > 8      # not one draw for the whole batch


def test_cache_holds_latents_and_teacher_features_by_image_id(weights, images_dir, tmp_path):
    out = tmp_path / "ll.hdf5"
    info = lowlevel.build_cache(np.array([4, 1, 4]), images_dir, weights["vae"], weights["teacher"], out,
                                tiny_vae=True, tiny_teacher=True, batch_size=1)
    assert info["images"] == 2
    cache = TargetCache(out)
    imgs = torch.from_numpy(nsd.read_images(images_dir, np.array([4]))).float()
    vae = lowlevel.load_vae(weights["vae"], tiny=True)
    teacher = lowlevel.load_teacher(weights["teacher"], tiny=True)
    with torch.no_grad():
        want_z, want_t = lowlevel.encode_latents(vae, imgs), teacher(lowlevel.normalise(imgs))
    np.testing.assert_allclose(cache.get(np.array([4]), "latents").astype(np.float32), want_z.numpy(), atol=2e-3,
                               rtol=2e-3)
    np.testing.assert_allclose(cache.get(np.array([4]), "teacher").astype(np.float32), want_t.numpy(), atol=2e-3,
                               rtol=2e-3)


# --------------------------------------------------------------------------- loss
def test_soft_cont_loss_hand_computed():
    t = torch.eye(2)
    # student == teacher == teacher_aug: logits I/1 against soft labels softmax(I): the entropy of [e,1]/(e+1)
    p = torch.tensor([np.e, 1.0]) / (np.e + 1)
    assert losses.soft_cont_loss(t, t, t, temp=1.0) == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    # the student pointing the other way: cross-entropy of log_softmax([0,1]) against p
    s = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    q = torch.log_softmax(torch.tensor([0.0, 1.0]), 0)
    assert losses.soft_cont_loss(s, t, t, temp=1.0) == pytest.approx(float(-(p * q).sum()), rel=1e-6)


# --------------------------------------------------------------------------- training
def blurry_data(weights, seed=0):
    """fake_data plus images and latents that are smooth functions of the CLIP targets (so
    learnable from the voxels); teacher features of the images from the tiny teacher."""
    data = fake_data(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    n = len(data.image_ids)
    w = torch.randn(data.targets[0].numel(), 4 * 7 * 7, generator=g) / data.targets[0].numel() ** 0.5
    code = (data.targets.float().flatten(1) @ w).view(n, 4, 7, 7)
    latents = torch.nn.functional.interpolate(code, size=(28, 28), mode="bilinear")
    images = torch.sigmoid(2 * torch.nn.functional.interpolate(code[:, :3], size=(224, 224), mode="bilinear"))
    teacher = lowlevel.load_teacher(weights["teacher"], tiny=True)
    with torch.no_grad():
        feats = teacher(lowlevel.normalise(images))
    data.lowlevel = LowLevelData(latents=latents.half(), teacher=feats.half(),
                                 images=ImagesInMemory(data.image_ids, images.half()))
    return data, teacher


def test_blurry_branch_fits_its_targets(weights, tmp_path):
    """Optimisation works on both low-level losses (generalisation to test images needs more
    data than a unit test has: the demo workflow checks it, test_decoding_workflow)."""
    data, teacher = blurry_data(weights)
    stats = loop.run(data, tiny_cfg(blurry_recon=True), tiny_tc(num_epochs=30, ckpt_interval=10, max_lr=3e-3),
                      tmp_path, {"subjects": [1]}, teacher=teacher)
    history = checkpoint.read(tmp_path / "last.pth")["history"]
    assert history[-1]["train_loss_blur_l1"] < 0.6 * history[0]["train_loss_blur_l1"]
    assert history[-1]["train_loss_blur_cont"] < history[0]["train_loss_blur_cont"] - 0.05
    assert all(np.isfinite(r["val_blur_l1"]) and 0 <= r["val_blur_2way"] <= 1 for r in history)
    assert stats["final"]["val_brain_to_image"] >= 0.2      # the CLIP part learns alongside (chance 0.1)
    assert "train_loss_blur_l1" in (tmp_path / "log.csv").read_text().splitlines()[0]


def test_blurry_run_resumes_to_the_same_weights(weights, tmp_path):
    data, teacher = blurry_data(weights)
    cfg, tc = tiny_cfg(blurry_recon=True), tiny_tc(num_epochs=4, ckpt_interval=2)
    loop.run(data, cfg, tc, tmp_path / "straight", {"subjects": [1]}, teacher=teacher)
    loop.run(data, cfg, tc, tmp_path / "split", {"subjects": [1]}, stop_after=2, teacher=teacher)
    loop.run(data, cfg, tc, tmp_path / "split", {"subjects": [1]}, teacher=teacher)
    a, b = checkpoint.read(tmp_path / "straight/last.pth"), checkpoint.read(tmp_path / "split/last.pth")
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k


def test_blurry_branch_needs_its_targets(tmp_path):
    with pytest.raises(ValueError, match="blurry_recon: true needs the low-level targets"):
        loop.run(fake_data(), tiny_cfg(blurry_recon=True), tiny_tc(), tmp_path, {"subjects": [1]})


# --------------------------------------------------------------------------- decoding and scoring
def test_blurry_recons_decode_the_latents_averaged_over_repeats(weights):
    from fmri_recon.decode import reconstruct
    from fmri_recon.models import MindEyeModel

    torch.manual_seed(0)
    model = MindEyeModel(tiny_cfg(blurry_recon=True)).eval()
    vae = lowlevel.load_vae(weights["vae"], tiny=True)
    voxels = torch.randn(3, 3, 30)
    got = reconstruct.blurry_recons(model, voxels, vae, batch_size=2)
    assert got.shape == (3, 3, 256, 256) and got.dtype == torch.float32
    with torch.no_grad():
        latents = torch.stack([model(voxels[:, r][:, None], 0)[2][0] for r in range(3)]).mean(0)
        want = torch.nn.functional.interpolate(lowlevel.decode_latents(vae, latents), size=(256, 256),
                                               mode="bilinear", antialias=False).clamp(0, 1)   # upstream's Resize
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)      # batches of 2 vs 3: rounding
    with pytest.raises(ValueError, match="no blurry branch"):
        reconstruct.blurry_recons(MindEyeModel(tiny_cfg()), voxels, vae)


def test_enhanced_images_are_scored_blended_three_to_one():
    from fmri_recon.evaluate.score import blend_blurry

    enhanced, blurry = torch.full((2, 3, 256, 256), 0.8), torch.full((2, 3, 256, 256), 0.4)
    torch.testing.assert_close(blend_blurry(enhanced, blurry, 0.75), torch.full((2, 3, 256, 256), 0.7))
    assert blend_blurry(enhanced, blurry, 1.0) is enhanced
    small = torch.full((2, 3, 224, 224), 0.4)                  # resized to 256 first, as upstream
    assert blend_blurry(enhanced, small, 0.5).shape == (2, 3, 256, 256)


def test_train_images_are_read_from_the_images_file_in_the_order_asked(tmp_path):
    """What the blurry branch's teacher sees each step (ImagesOnDisk): those rows, repeats kept."""
    images = np.stack([np.full((3, 224, 224), i / 10, np.float16) for i in range(6)])
    with h5py.File(tmp_path / nsd.IMAGES_FILE, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 3, 224, 224))
    got = ImagesOnDisk(tmp_path)(np.array([4, 1, 4, 0]))
    assert got.dtype == torch.float16 and torch.equal(got, torch.from_numpy(images[[4, 1, 4, 0]]))
