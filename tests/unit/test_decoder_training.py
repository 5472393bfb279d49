"""The demo's decoder trainings: what they may learn from, and how they draw their batches.

Whether the trained decoders reconstruct is tested on the shared demo run (test_demo_science).
"""
import numpy as np
import pytest

from fmri_recon.data import nsd, synthetic
from fmri_recon.decode import tiny_decoders, tiny_vae


def test_train_ids_leave_out_every_test_image():
    got = tiny_vae.train_ids(np.array([7, 3, 5, 1, 9]), np.array([5, 9, 11]))
    assert got.tolist() == [1, 3, 7]
    with pytest.raises(ValueError, match="no train images"):
        tiny_vae.train_ids(np.array([5, 9]), np.array([5, 9]))


def test_batches_visit_every_image_once_per_epoch():
    batches = list(tiny_vae.batches(10, 4, 5, np.random.default_rng(0)))    # 20 draws = 2 epochs
    assert [len(b) for b in batches] == [4] * 5
    drawn = np.concatenate(batches)
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))


def test_captions_of_the_synthetic_images_by_id(tmp_path):
    cfg = synthetic.SyntheticConfig(num_images=20, num_test_images=4, trials_per_session=20, image_size=32)
    synthetic.write_dataset(cfg, tmp_path)
    caps = synthetic.read_captions(tmp_path, np.array([3, 0]))
    rng = np.random.default_rng(cfg.seed)
    _, source, scale = synthetic.make_images(cfg.num_images, cfg.image_size, rng)
    assert caps == synthetic.captions(source[[3, 0]], scale[[3, 0]])[0].tolist()
    test = nsd.load_eval(tmp_path, nsd.EVAL_CAPTIONS)
    ids = nsd.open_split(tmp_path, 1, 1).test_images
    assert synthetic.read_captions(tmp_path, ids) == [str(c) for c in test]
    with pytest.raises(nsd.DataError, match="20 captions, image id 25"):
        synthetic.read_captions(tmp_path, np.array([25]))


@pytest.fixture(scope="module")
def tiny_data():
    import torch

    gen = torch.Generator().manual_seed(0)
    from fmri_recon.resize import resize

    images = resize(torch.rand(8, 3, 4, 4, generator=gen), [32, 32])     # smooth images: learnt in a few steps
    return images, torch.randn(8, 4, 16, generator=gen), np.arange(8)


def test_trained_unclip_learns_and_loads_as_a_decoder(tiny_data, tmp_path):
    import torch

    from fmri_recon.decode import weights
    from fmri_recon.decode.unclip import UnclipDecoder

    images, tokens, ids = tiny_data
    init = weights.build_tiny_unclip(tmp_path / "random", context_dim=16, seq_len=4,
                                     vae_params=tiny_decoders.TRAINED_VAE, image_size=32)
    report = tiny_decoders.train_unclip(init, tmp_path / "trained", images, tokens, ids, vae_steps=150,
                                           unet_steps=40, batch_size=4, lr=2e-3, drop_rate=0.1, seed=0)
    assert report["train_image_ids"] == list(range(8))
    assert report["vae"]["last_loss"] < 0.7 * report["vae"]["first_loss"], report["vae"]
    assert report["unet"]["last_loss"] < report["unet"]["first_loss"], report["unet"]
    decoder = UnclipDecoder.from_pretrained(tmp_path / "trained")
    assert decoder.meta["vae_scale_factor"] == pytest.approx(report["vae"]["scaling_factor"])
    out = decoder.decode(tokens[:2], torch.Generator().manual_seed(0), num_steps=3, guidance=5.0, batch_size=2)
    assert out.shape == (2, 3, 32, 32)
    # the conditioning is standardised with the train tokens' own statistics, at decode time too
    stats = decoder.token_stats
    assert torch.allclose(stats["mean"], tokens.mean(0)) and torch.allclose(stats["std"], tokens.std(0) + 1e-3)
    decoder.token_stats = None
    raw = decoder.decode(tokens[:2], torch.Generator().manual_seed(0), num_steps=3, guidance=5.0, batch_size=2)
    assert not torch.allclose(out, raw, atol=1e-3)
    # its VAE encodes SD-XL's range and decodes into the unCLIP output's: the images come back
    with torch.no_grad():
        vae = decoder.vae
        rec = (vae.decode(vae.encode(2 * images - 1).latent_dist.mode()).sample * 0.8 + 0.2).clamp(0, 1)
    assert (rec.mean((0, 2, 3)) - images.mean((0, 2, 3))).abs().max() < 0.02


def test_standardised_latent_channels_decode_as_before():
    """Folding the channels' mean and std into the quant convs leaves the autoencoder unchanged
    and its latents zero-mean, unit-std per channel."""
    import torch
    from diffusers import AutoencoderKL

    from fmri_recon.decode import weights

    torch.manual_seed(0)
    vae = AutoencoderKL(**weights.vae_config(tiny_decoders.TRAINED_VAE, 32)).eval()
    x = 2 * torch.rand(6, 3, 32, 32) - 1
    with torch.no_grad():
        vae.quant_conv.bias[:4] += torch.tensor([3.0, -2.0, 0.5, 0.0])   # channels off-centre
        before = vae.decode(vae.encode(x).latent_dist.mode()).sample
        tiny_vae.standardise_latent_channels(vae, tiny_vae.latent_modes(vae, x))
        after = vae.decode(vae.encode(x).latent_dist.mode()).sample
    modes = tiny_vae.latent_modes(vae, x)
    assert torch.allclose(before, after, atol=1e-4)
    assert torch.allclose(modes.mean((0, 2, 3)), torch.zeros(4), atol=1e-4)
    assert torch.allclose(modes.std((0, 2, 3)), torch.ones(4), atol=1e-4)


def test_content_timesteps_favour_high_noise():
    """Density proportional to t: 3/4 of the draws above t = 500 (a uniform draw puts half there),
    every step of the schedule reachable."""
    import torch

    t = tiny_decoders._content_timesteps(200_000, 1000, torch.Generator().manual_seed(0))
    assert t.min() >= 0 and t.max() == 999
    assert abs(float((t >= 500).float().mean()) - 0.75) < 0.01


def test_trained_git_learns_its_captions(tiny_data, tmp_path):
    from fmri_recon.decode import weights
    from fmri_recon.decode.captions import GitCaptioner

    images, _, ids = tiny_data
    captions = [synthetic.SOURCES[i % 2][1] for i in range(8)]
    init = weights.build_tiny_git(tmp_path / "random")
    report = tiny_decoders.train_git(init, tmp_path / "trained", images, captions, ids, steps=60, batch_size=8,
                                        lr=3e-3, seed=0)
    assert report["git"]["last_loss"] < 0.5 * report["git"]["first_loss"], report["git"]
    git = GitCaptioner.from_pretrained(tmp_path / "trained")
    got = git.caption(git.image_features(images[:2]), max_length=20)
    assert set(got) <= set(captions), got                      # it says the captions it learnt, and stops
    with pytest.raises(ValueError, match="not in GIT's vocabulary"):
        tiny_decoders.train_git(init, tmp_path / "bad", images, ["a zyzzyva"] * 8, ids, steps=1, batch_size=8,
                                   lr=1e-3, seed=0)


def test_trained_sdxl_learns_and_refines(tiny_data, tmp_path):
    from fmri_recon.decode import refine, weights

    images, _, ids = tiny_data
    captions = [synthetic.SOURCES[i % 2][1] for i in range(8)]
    init = weights.build_tiny_sdxl_img2img(tmp_path / "random")
    report = tiny_decoders.train_sdxl(init, init / "vae", tmp_path / "trained", images, captions, ids, size=64,
                                         steps=30, batch_size=8, lr=2e-3, drop_rate=0.1, seed=0)
    assert report["max_timestep"] == tiny_decoders.REFINE_MAX_T < 1000
    assert report["unet"]["last_loss"] < report["unet"]["first_loss"], report["unet"]
    pipe = refine.load_pipeline(tmp_path / "trained")
    out = refine.refine(pipe, images[:2], captions[:2], steps=25, guidance=5.0, size=64, seed=0, batch_size=2)
    assert out.shape == (2, 3, 256, 256)


def test_output_range_fold_is_affine_and_undone_by_its_inverse():
    """What train_unclip folds into its VAE and train_sdxl folds back out (an exact affine map)."""
    import torch
    from diffusers import AutoencoderKL

    from fmri_recon.decode import weights

    torch.manual_seed(0)
    vae = AutoencoderKL(**weights.vae_config(tiny_decoders.TRAINED_VAE, 32)).eval()
    z = torch.randn(2, 4, 8, 8)
    scale, shift = tiny_decoders.UNCLIP_FROM_SDXL
    with torch.no_grad():
        y = vae.decode(z).sample
        tiny_decoders.fold_output_range(vae, scale, shift)
        folded = vae.decode(z).sample
        tiny_decoders.fold_output_range(vae, 1 / scale, -shift / scale)
        back = vae.decode(z).sample
    assert torch.allclose(folded, scale * y + shift, atol=1e-5)
    assert torch.allclose((folded * 0.8 + 0.2), (y + 1) / 2, atol=1e-5)     # the unCLIP output is SD-XL's image
    assert torch.allclose(back, y, atol=1e-5)


def test_x0_weighted_loss_by_hand():
    """Weights 1/alphas_cumprod = 2 and 4, normalised to mean 1: an error of 1 on the first
    sample alone scores 2 / (2 + 4); on the noisier second alone 4 / (2 + 4)."""
    import torch

    acp, eps = torch.tensor([0.5, 0.25]), torch.zeros(2, 1, 2, 2)
    first, second = eps.clone(), eps.clone()
    first[0], second[1] = 1.0, 1.0
    assert float(tiny_decoders._x0_weighted_mse(first, eps, acp)) == pytest.approx(1 / 3)
    assert float(tiny_decoders._x0_weighted_mse(second, eps, acp)) == pytest.approx(2 / 3)
