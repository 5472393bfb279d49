"""Pin MindEye2's evaluation metrics (docs/upstream.md §5) on constructed cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmri_recon.evaluate.metrics import feature_nets as N
from fmri_recon.evaluate.metrics import image as M
import fmri_recon.evaluate.metrics.retrieval as R


def smooth_images(n, size=64, seed=0):
    """``n`` distinct smooth RGB images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def alexnet2():
    return N.build_feature_model("alexnet2", None, seed=0)


# --------------------------------------------------------------------------- low level

def test_resize_256_shape_and_no_antialias():
    x = smooth_images(2, size=512)
    y = M.resize_256(x)
    assert y.shape == (2, 3, 256, 256)
    ref = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=False)
    torch.testing.assert_close(y, ref)


def test_identical_images_pixcorr_ssim_one():
    x = smooth_images(4)
    assert M.pixcorr(x, x) == pytest.approx(1.0, abs=1e-9)
    assert M.ssim(x, x) == pytest.approx(1.0, abs=1e-9)


def test_pixcorr_negative_contrast_is_minus_one():
    x = smooth_images(3)
    assert M.pixcorr(x, 1 - x) == pytest.approx(-1.0, abs=1e-6)


def test_pixcorr_matches_per_image_corrcoef_at_425():
    gt, rec = smooth_images(3, seed=1), smooth_images(3, seed=2)
    g = F.interpolate(gt, size=(425, 425), mode="bilinear", align_corners=False).reshape(3, -1).numpy()
    r = F.interpolate(rec, size=(425, 425), mode="bilinear", align_corners=False).reshape(3, -1).numpy()
    ref = np.mean([np.corrcoef(g[i], r[i])[0, 1] for i in range(3)])
    assert M.pixcorr(gt, rec) == pytest.approx(ref, abs=1e-9)


def test_ssim_matches_direct_skimage_call():
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    gt, rec = smooth_images(1, size=256, seed=3), smooth_images(1, size=256, seed=4)
    up = lambda x: F.interpolate(x, size=(425, 425), mode="bilinear", align_corners=False)[0]  # noqa: E731
    g = rgb2gray(up(gt).permute(1, 2, 0).double().numpy())
    r = rgb2gray(up(rec).permute(1, 2, 0).double().numpy())
    ref = structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=1.0)
    assert M.ssim(gt, rec) == pytest.approx(ref, abs=1e-9)
    assert ref < 0.99


def test_blend_is_exactly_three_to_one():
    a, b = smooth_images(2, seed=5), smooth_images(2, seed=6)
    assert torch.equal(M.blend(a, b), 0.75 * a + 0.25 * b)
    assert torch.equal(M.blend(a, b, weight=0.5), 0.5 * a + 0.5 * b)


# --------------------------------------------------------------------------- two-way / distance

def test_two_way_hand_counted():
    # Zero-mean orthonormal rows u_i (Hadamard rows 1..4): corr(u_i, sum_k A[j,k] u_k) =
    # A[j,i] / |A_j|, so in column j of r the comparison is A[j,i] < A[j,j].
    h = np.array([[1]])
    for _ in range(3):
        h = np.block([[h, h], [h, -h]])
    u = h[1:5] / np.sqrt(8.0)
    A = np.array([[0.9, 0.1, 0.5, 0.2],    # j=0: 0.1, 0.5, 0.2 < 0.9   -> 3
                  [0.8, 0.3, 0.1, 0.2],    # j=1: 0.1, 0.2 < 0.3        -> 2
                  [0.1, 0.7, 0.6, 0.4],    # j=2: 0.1, 0.4 < 0.6        -> 2
                  [0.5, 0.6, 0.7, 0.0]])   # j=3: nothing < 0.0         -> 0
    P = A @ u
    assert M.two_way_identification(u, P) == pytest.approx(7 / 12, abs=1e-12)
    np.testing.assert_allclose(M.two_way_identification(u, P, return_per_image=True), [1, 2 / 3, 2 / 3, 0])
    # the ground truth varies, the reconstruction is fixed: swapping roles changes the score
    assert M.two_way_identification(P, u) != pytest.approx(7 / 12)


def test_two_way_permutation_with_ties_uses_strict_less():
    # one-hot features: corr = 1 on a match, -1/7 otherwise (ties never count)
    R_ = np.eye(4, 8)
    P = R_[[1, 0, 2, 3]]     # swap the first two: 2 fixed points of 4
    assert M.two_way_identification(R_, P) == pytest.approx(0.5, abs=1e-12)
    assert M.two_way_identification(R_, R_) == 1.0


def test_two_way_matches_corrcoef_formula():
    rng = np.random.default_rng(0)
    Rf = rng.normal(size=(12, 30))
    Pf = Rf + rng.normal(scale=1.5, size=(12, 30))
    r = np.corrcoef(Rf, Pf)[:12, 12:]
    counts = np.sum(r < np.diag(r), axis=0)
    ref = np.mean(counts) / 11
    assert 0 < ref < 1
    assert M.two_way_identification(torch.tensor(Rf), torch.tensor(Pf)) == pytest.approx(ref, abs=1e-12)


def test_correlation_distance():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(5, 40))
    assert M.correlation_distance(f, f) == pytest.approx(0.0, abs=1e-12)
    assert M.correlation_distance(f, -f) == pytest.approx(2.0, abs=1e-12)
    from scipy.spatial.distance import correlation
    g = rng.normal(size=(5, 40))
    assert M.correlation_distance(f, g) == pytest.approx(np.mean([correlation(f[i], g[i]) for i in range(5)]))


# --------------------------------------------------------------------------- networks

def test_identical_images_alexnet_two_way_is_one(alexnet2):
    x = smooth_images(8, size=32, seed=7)
    feats = N.extract("alexnet2", alexnet2, M.resize_256(x), batch_size=4)
    assert feats.shape == (8, 192 * 31 * 31) and feats.dtype == torch.float32
    assert M.two_way_identification(feats, feats) == 1.0
    out = N.image_metrics(x, x, {"alexnet2": alexnet2})
    assert list(out) == ["pixcorr", "ssim", "alexnet2", "pixcorr_ci95", "ssim_ci95", "alexnet2_ci95"]
    assert out["pixcorr"] == pytest.approx(1.0) and out["ssim"] == pytest.approx(1.0)
    assert out["alexnet2"] == 1.0


def test_extract_preprocessing_for_clip_callable():
    seen = []

    def encode_image(x):
        seen.append(x.clone())
        return x[:, :, :4, :4].flatten(1)[:, :5]

    x = M.resize_256(smooth_images(3, seed=8))
    feats = N.extract("clip", encode_image, x, batch_size=2)
    assert feats.shape == (3, 5) and [len(s) for s in seen] == [2, 1]
    got = torch.cat(seen)
    ref = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(M.CLIP_MEAN)[None, :, None, None]
    std = torch.tensor(M.CLIP_STD)[None, :, None, None]
    torch.testing.assert_close(got, (ref - mean) / std)


def test_feature_table():
    t = N.FEATURE_NETS
    assert set(t) == set(M.METRIC_KEYS[2:])
    assert (t["alexnet2"].return_node, t["alexnet5"].return_node) == ("features.4", "features.11")
    assert {k: t[k].resize for k in t} == {"alexnet2": 256, "alexnet5": 256, "inception": 342, "clip": 224,
                                           "efficientnet": 255, "swav": 224}
    assert {k for k in t if t[k].score == "distance"} == {"efficientnet", "swav"}
    assert t["clip"].mean == M.CLIP_MEAN and t["swav"].mean == N.IMAGENET_MEAN


@pytest.fixture(scope="module")
def effnet():
    return N.build_feature_model("efficientnet", None, seed=0)


def test_all_nets_identical_images_score_perfectly(effnet):
    x = smooth_images(2, size=32, seed=9)
    models = {k: N.build_feature_model(k, None) for k in ("alexnet5", "swav")}
    models["efficientnet"] = effnet
    models["clip"] = lambda z: z[:, :, ::16, ::16].flatten(1)
    out = N.image_metrics(x, x, models, batch_size=2)
    keys = ["pixcorr", "ssim", "alexnet5", "clip", "efficientnet", "swav"]
    assert list(out) == keys + [f"{k}_ci95" for k in keys]
    for k in ("alexnet5", "clip"):
        assert out[k] == 1.0
    for k in ("efficientnet", "swav"):
        assert out[k] == pytest.approx(0.0, abs=1e-6)
    assert N.extract("efficientnet", effnet, M.resize_256(x)).shape == (2, 1280)


def test_ground_truth_features_are_computed_once_per_experiment():
    calls = []
    def clip(z):
        calls.append(len(z))
        return z[:, :, ::16, ::16].flatten(1)
    gt, a, b = (smooth_images(3, size=32, seed=s) for s in (1, 2, 3))
    memo = {}
    first = N.image_metrics(gt, a, {"clip": clip}, gt_features=memo)
    second = N.image_metrics(gt, b, {"clip": clip}, gt_features=memo)
    assert calls == [3, 3, 3] and set(memo) == {"clip"}        # gt, a, then only b
    assert first == N.image_metrics(gt, a, {"clip": clip}) and second == N.image_metrics(gt, b, {"clip": clip})


def test_inception_features():
    inception = N.build_feature_model("inception", None)
    x = M.resize_256(smooth_images(2, size=32, seed=10))
    feats = N.extract("inception", inception, x)
    assert feats.shape == (2, 2048)
    assert M.two_way_identification(feats, feats) == 1.0


def test_build_loads_state_dict_strictly(tmp_path, effnet):
    import torchvision

    torch.manual_seed(123)
    net = torchvision.models.efficientnet_b1(weights=None).eval()
    path = tmp_path / "effnet.pth"
    torch.save(net.state_dict(), path)
    loaded = N.build_feature_model("efficientnet", str(path))
    x = M.resize_256(smooth_images(2, size=32))
    mean = torch.tensor(N.IMAGENET_MEAN)[None, :, None, None]
    std = torch.tensor(N.IMAGENET_STD)[None, :, None, None]
    z = F.interpolate(x, size=(255, 255), mode="bilinear", align_corners=False, antialias=False)
    with torch.no_grad():
        ref = net.avgpool(net.features((z - mean) / std)).flatten(1)
    torch.testing.assert_close(N.extract("efficientnet", loaded, x), ref)
    assert not torch.allclose(N.extract("efficientnet", effnet, x), ref, rtol=1e-3, atol=0)
    sd = net.state_dict()
    del sd["features.0.0.weight"]
    torch.save(sd, path)
    with pytest.raises(RuntimeError):
        N.build_feature_model("efficientnet", str(path))


def test_seeded_random_init_is_reproducible_and_leaves_global_rng(alexnet2):
    state = torch.random.get_rng_state()
    again = N.build_feature_model("alexnet2", None, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(alexnet2.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_swav_checkpoint_layout_is_accepted(tmp_path):
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    sd = {"module." + k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd["module.projection_head.0.weight"] = torch.zeros(2, 2)
    sd["module.prototypes.weight"] = torch.zeros(2, 2)
    path = tmp_path / "swav.pth"
    torch.save(sd, path)
    model = N.build_feature_model("swav", str(path))
    got = model.state_dict()
    assert torch.equal(got["conv1.weight"], net.state_dict()["conv1.weight"])
    del sd["module.conv1.weight"]
    torch.save(sd, path)
    with pytest.raises(RuntimeError):
        N.build_feature_model("swav", str(path))


# --------------------------------------------------------------------------- retrieval

def upstream_fwd_bwd(image, brain):
    """The spec's description of upstream: bcs(Z, B)[i, j] = cos(B_i, Z_j); topk over rows."""
    def bcs(Z, B):
        Zn, Bn = F.normalize(Z, dim=-1), F.normalize(B, dim=-1)
        return (Zn @ Bn.T).T

    labels = torch.arange(len(image))
    fwd = bcs(brain, image)            # 'fwd' = bcs(brain, image)
    bwd = bcs(image, brain)
    acc = lambda s: (torch.argsort(s, dim=1)[:, -1] == labels).float().mean().item()  # noqa: E731
    return acc(fwd), acc(bwd)


def test_retrieval_near_copies_are_perfect_both_ways():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(50, 4, 16, generator=g)
    brain = img + 0.01 * torch.randn(50, 4, 16, generator=g)
    out = R.retrieval(img, brain, n_draws=5)
    assert out["image_to_brain"] == 1.0 and out["brain_to_image"] == 1.0
    assert out["image_to_brain_ci95"] == 0.0
    assert out["draw_size"] == 50 and out["draw_size_requested"] == 300 and out["n_draws"] == 5
    assert out["chance"] == pytest.approx(1 / 50)


def hub_case(n=20, k=5):
    """image_i = e_i; brains 1..k collapse towards image 0: brain_i = e_0 + 0.1 e_i."""
    img = torch.eye(n)
    brain = torch.eye(n)
    for i in range(1, k + 1):
        brain[i] = img[0] + 0.1 * img[i]
    return img, brain


def test_retrieval_directions_are_not_swapped():
    img, brain = hub_case()
    assert torch.allclose(brain[3], torch.eye(20)[0] + 0.1 * torch.eye(20)[3])
    out = R.retrieval(img, brain, n_draws=3)
    # every image's own brain is its nearest brain ...
    assert out["image_to_brain"] == 1.0
    # ... but brains 1..5 sit next to image 0, so 5 of 20 brains retrieve the wrong image
    assert out["brain_to_image"] == pytest.approx(15 / 20)
    # and this is the spec's upstream orientation: fwd ("Image retrieval") = image_to_brain
    fwd, bwd = upstream_fwd_bwd(img, brain)
    assert (fwd, bwd) == (pytest.approx(out["image_to_brain"]), pytest.approx(out["brain_to_image"]))
    assert R.PAPER_NAMES == {"image_to_brain": "Image retrieval", "brain_to_image": "Brain retrieval"}
    assert R.UPSTREAM_NAMES == {"image_to_brain": "fwd", "brain_to_image": "bwd"}
    # a smaller draw: still perfect one way, worse the other on average
    sub = R.retrieval(img, brain, n_draws=30, draw_size=10, seed=1)
    assert sub["draw_size"] == 10 and sub["image_to_brain"] == 1.0 and sub["brain_to_image"] < 1.0
    assert sub["brain_to_image_ci95"] > 0 and len(sub["brain_to_image_draws"]) == 30


def test_retrieval_default_draw_size_and_reproducible():
    g = torch.Generator().manual_seed(1)
    img = torch.randn(320, 8, generator=g)
    brain = img + 1.0 * torch.randn(320, 8, generator=g)
    a = R.retrieval(img.numpy(), brain.numpy(), n_draws=4)
    b = R.retrieval(img, brain, n_draws=4)
    assert a["draw_size"] == 300 and a["chance"] == pytest.approx(1 / 300)
    assert a["image_to_brain_draws"] == b["image_to_brain_draws"]
    assert 0 < a["image_to_brain"] < 1 and a["image_to_brain_ci95"] >= 0


def test_topk_matches():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.0, 0.3, 0.2]])
    assert topk_list(sim, 1) == [True, False, False]
    assert topk_list(sim, 2) == [True, True, True]
    assert topk_list(sim, 10) == [True, True, True]


def topk_list(sim, k):
    return R.topk_matches(sim, k=k).tolist()


def test_evaluate_scores_against_the_cached_ground_truth_features(tmp_path):
    """The gt_features rule's file is what score_images compares with: the same scores as
    features computed in the job; another image set's features score differently; a file of
    another number of images is refused, naming it."""
    from safetensors.torch import save_file

    from fmri_recon.evaluate import score

    def clip(z):
        return z[:, :, ::16, ::16].flatten(1)
    gt, rec, other = (smooth_images(6, size=32, seed=s) for s in (1, 2, 3))
    models = {"clip": clip}
    path = tmp_path / "gt.safetensors"
    save_file(score.ground_truth_features(gt, models), str(path))
    cached = score.read_ground_truth_features(path, len(gt))
    inline, _ = score.score_images({"recon": gt * 0.5 + rec * 0.5}, gt, models)
    scored, _ = score.score_images({"recon": gt * 0.5 + rec * 0.5}, gt, models, gt_features=cached)
    assert scored == inline and inline["recon"]["clip"] == 1.0
    wrong, _ = score.score_images({"recon": gt * 0.5 + rec * 0.5}, gt, models,
                                     gt_features=score.ground_truth_features(other, models))
    assert wrong["recon"]["clip"] < 1.0
    with pytest.raises(ValueError, match=r"gt.safetensors: features of \{'clip': 6\} images, the ground truth has 5"):
        score.read_ground_truth_features(path, 5)


# --------------------------------------------------------------------------- confidence intervals

def test_bootstrap_interval_of_a_fair_coin_matches_its_normal_interval():
    # 200 images scoring 0 or 1, half each: the mean's sd is sqrt(.25 / 200) = .0354, so the
    # 95% half-width is 1.96 * .0354 = .0693 (the percentile bootstrap agrees to a few percent).
    x = np.array([0.0, 1.0] * 100)
    assert M.bootstrap_ci95(x) == pytest.approx(1.96 * np.sqrt(0.25 / 200), rel=0.08)
    assert M.bootstrap_ci95(x) == M.bootstrap_ci95(x)              # a fixed seed: reruns agree
    assert M.bootstrap_ci95(np.full(10, 0.3)) == 0.0
    assert np.isnan(M.bootstrap_ci95(np.array([0.1, np.nan, 0.2])))


def test_image_metrics_intervals_come_from_the_per_image_scores():
    gt = smooth_images(12, size=32, seed=3)
    rec = (gt + 0.3 * smooth_images(12, size=32, seed=4)).clamp(0, 1)
    out = N.image_metrics(gt, rec)
    g = M._resize(M.resize_256(gt), M.LOWLEVEL_SIZE).reshape(12, -1).numpy()
    r = M._resize(M.resize_256(rec), M.LOWLEVEL_SIZE).reshape(12, -1).numpy()
    by_hand = np.array([np.corrcoef(g[i], r[i])[0, 1] for i in range(12)])
    assert out["pixcorr"] == pytest.approx(by_hand.mean())
    assert out["pixcorr_ci95"] == pytest.approx(M.bootstrap_ci95(by_hand)) and out["pixcorr_ci95"] > 0
    assert out["pixcorr_ci95"] < by_hand.max() - by_hand.min()
