"""Tests of fmri_recon.models: upstream checkpoint layout, parameter counts, the mixer quirk,
strict loading, and a diffusion prior that learns and samples on the DDIM schedule.

Expected layouts and counts are written out from docs/upstream.md (§2.4 and
Appendix A), never derived from the model.  Big configurations are built on the meta device.
"""
from __future__ import annotations

import copy

import pytest
import torch

from fmri_recon.models import (BrainConfig, BrainDiffusionPrior, MindEyeModel, PriorConfig,
                               ddim_time_pairs, parameter_counts)
from fmri_recon.models.prior_layers import RelPosBias

# The Appendix A check config: S=16, E=64, h=256, V=2000, H=1, D=64.
SMALL = dict(num_voxels=[2000], hidden_dim=256, clip_seq_dim=16, clip_emb_dim=64, prior_dim_head=64)
SEED = dict(num_voxels=[15724], hidden_dim=1024, clip_seq_dim=49, clip_emb_dim=768)
LITE = dict(num_voxels=[15724], hidden_dim=1024, clip_seq_dim=256, clip_emb_dim=1664)


def appendix_a(S, E, h, V, H, D, n_blocks=4, depth=6, T=100):
    """Appendix A's table written out (non-blurry keys): key -> shape."""
    t = {"ridge.linears.0.weight": (h, V), "ridge.linears.0.bias": (h,)}
    for b in range(n_blocks):
        for name, dim in (("mixer_blocks1", h), ("mixer_blocks2", 1)):
            p = f"backbone.{name}.{b}"
            t |= {f"{p}.0.weight": (dim,), f"{p}.0.bias": (dim,)}
            for i in (0, 3):
                t |= {f"{p}.1.{i}.weight": (dim, dim), f"{p}.1.{i}.bias": (dim,)}
    t |= {"backbone.backbone_linear.weight": (S * E, h), "backbone.backbone_linear.bias": (S * E,)}
    for i in (0, 3, 6):
        t |= {f"backbone.clip_proj.{i}.weight": (E,), f"backbone.clip_proj.{i}.bias": (E,)}
    for i in (2, 5, 8):
        t |= {f"backbone.clip_proj.{i}.weight": (E, E), f"backbone.clip_proj.{i}.bias": (E,)}
    for buf in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                "posterior_mean_coef1", "posterior_mean_coef2", "p2_loss_weight"):
        t[f"diffusion_prior.noise_scheduler.{buf}"] = (T,)
    n = "diffusion_prior.net"
    t |= {f"{n}.learned_query": (S, E), f"{n}.null_brain_embeds": (S, E), f"{n}.null_image_embed": (S, E)}
    m = f"{n}.to_time_embeds.0.1.net"
    t |= {f"{m}.0.0.weight": (2 * E, E), f"{m}.0.0.bias": (2 * E,),
          f"{m}.1.0.weight": (2 * E, 2 * E), f"{m}.1.0.bias": (2 * E,),
          f"{m}.2.weight": (E, 2 * E), f"{m}.2.bias": (E,)}
    c = f"{n}.causal_transformer"
    t[f"{c}.rel_pos_bias.relative_attention_bias.weight"] = (32, H)
    for l in range(depth):
        a, f = f"{c}.layers.{l}.0", f"{c}.layers.{l}.1"
        t |= {f"{a}.null_kv": (2, D), f"{a}.norm.g": (E,), f"{a}.to_q.weight": (H * D, E),
              f"{a}.to_kv.weight": (2 * D, E), f"{a}.rotary_emb.freqs": (min(32, D) // 2,),
              f"{a}.to_out.0.weight": (E, H * D), f"{a}.to_out.1.g": (E,),
              f"{f}.0.g": (E,), f"{f}.1.weight": (8 * E, E), f"{f}.5.weight": (E, 4 * E)}
    t |= {f"{c}.norm.g": (E,), f"{c}.project_out.weight": (E, E)}
    return t


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def meta_model(**kw):
    with torch.device("meta"):
        return MindEyeModel(BrainConfig(**kw))


def numel(module):
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- layout and counts

def test_state_dict_matches_appendix_a():
    got = shapes(meta_model(**SMALL))
    assert len(got) == 149
    assert got == appendix_a(S=16, E=64, h=256, V=2000, H=1, D=64)


def test_blurry_state_dict_matches_appendix_a():
    got = shapes(meta_model(**SMALL, blurry_recon=True))
    assert len(got) == 249
    blurry = {k: v for k, v in got.items() if k not in appendix_a(S=16, E=64, h=256, V=2000, H=1, D=64)}
    assert len(blurry) == 100
    up = {k[len("backbone.bupsampler."):]: v for k, v in blurry.items() if k.startswith("backbone.bupsampler.")}
    rest = {k: v for k, v in blurry.items() if not k.startswith("backbone.bupsampler.")}
    assert rest == {
        "backbone.blin1.weight": (3136, 256), "backbone.blin1.bias": (3136,),
        "backbone.bnorm.weight": (64,), "backbone.bnorm.bias": (64,),
        "backbone.b_maps_projector.0.weight": (512, 64, 1, 1),
        "backbone.b_maps_projector.3.weight": (512, 512, 1, 1),
        "backbone.b_maps_projector.1.weight": (512,), "backbone.b_maps_projector.1.bias": (512,),
        "backbone.b_maps_projector.4.weight": (512,), "backbone.b_maps_projector.4.bias": (512,),
        "backbone.b_maps_projector.6.weight": (512, 512, 1, 1), "backbone.b_maps_projector.6.bias": (512,),
    }
    # the Decoder's module groups as Appendix A lists them (and nothing else)
    groups = ["conv_in.", "conv_norm_out.", "conv_out.", "mid_block.resnets.0.", "mid_block.resnets.1."]
    groups += [f"up_blocks.{u}.resnets.{r}." for u in range(3) for r in range(2)]
    groups += ["up_blocks.0.upsamplers.0.conv.", "up_blocks.1.upsamplers.0.conv."]
    groups += [f"mid_block.attentions.0.{m}." for m in ("group_norm", "to_q", "to_k", "to_v", "to_out.0")]
    assert all(any(k.startswith(g) for g in groups) for k in up)
    assert all(any(k.startswith(g) for k in up) for g in groups)
    assert up["conv_in.weight"] == (128, 64, 3, 3) and up["conv_out.weight"] == (4, 32, 3, 3)


def test_seed_config_numbers():
    sd = meta_model(**SEED).state_dict()
    assert len(sd) == 149
    assert sum(v.numel() for v in sd.values()) == 119_954_620


def test_lite_config_parameter_counts():
    m = meta_model(**LITE)  # h=1024, no blurry, bigG, heads 1664//52 = 32, dim_head 52
    c = parameter_counts(m)
    assert c["ridge"] == 16_102_400
    assert c["backbone"] == 453_360_280
    assert c["prior"] + c["frozen"] == 259_865_216 and c["frozen"] == 16  # rotary freqs
    assert numel(m.diffusion_prior) == 259_865_216
    assert c["total"] == c["ridge"] + c["backbone"] + c["prior"]
    assert round((c["total"] + c["frozen"]) / 1e6, 1) == 729.3


def test_final_config_blurry_counts():
    m = meta_model(**{**LITE, "hidden_dim": 4096}, blurry_recon=True)
    c = parameter_counts(m)
    bb = m.backbone
    assert c["ridge"] == 64_409_600 and c["backbone"] == 1_903_020_028
    assert sum(numel(x) for x in (bb.blin1, bb.bnorm, bb.bupsampler, bb.b_maps_projector)) == 15_158_628
    assert numel(bb.bupsampler) == 1_750_692
    assert round((c["total"] + c["frozen"]) / 1e6, 1) == 2227.3


# ----------------------------------------------------------------------------- behaviour

def tiny_cfg(**kw):
    base = dict(num_voxels=[30, 20], hidden_dim=16, n_blocks=2, clip_seq_dim=4, clip_emb_dim=8,
                prior_depth=1, prior_dim_head=8, use_prior=False)
    return BrainConfig(**{**base, **kw})


def test_upstream_mixer_blocks_have_no_effect():
    torch.manual_seed(0)
    net = MindEyeModel(tiny_cfg()).backbone.eval()
    x = torch.randn(5, 1, 16)
    out = net.mixer(x)
    diff = out - x
    assert torch.allclose(diff, diff.flatten()[0].expand_as(diff), atol=1e-6)  # input + a constant
    before = net(x)[0]
    with torch.no_grad():
        for p in net.mixer_blocks1.parameters():
            p.normal_()
    assert torch.equal(net(x)[0], before)


def test_residual_mlp_blocks_work():
    torch.manual_seed(0)
    model = MindEyeModel(tiny_cfg(backbone="residual_mlp"))
    assert not any("mixer_blocks" in k for k in model.state_dict())
    net = model.backbone.eval()
    x = torch.randn(5, 1, 16)
    before = net(x)[0]
    with torch.no_grad():
        net.blocks[0][1][0].weight.normal_()
    assert not torch.allclose(net(x)[0], before)


def test_forward_shapes_multisubject_and_blurry():
    torch.manual_seed(0)
    model = MindEyeModel(tiny_cfg(blurry_recon=True)).eval()
    backbone, clip_voxels, (blur, aux) = model([torch.randn(2, 1, 30), torch.randn(3, 1, 20)], [0, 1])
    assert backbone.shape == clip_voxels.shape == (5, 4, 8)
    assert blur.shape == (5, 4, 28, 28) and aux.shape == (5, 49, 512)
    _, _, (blur, aux) = MindEyeModel(tiny_cfg())(torch.randn(2, 1, 20), 1)
    assert blur is None and aux is None


def test_retrieval_head_excludes_the_targets_mean_direction():
    torch.manual_seed(0)
    net = MindEyeModel(tiny_cfg(clip_exclude_mean=True)).backbone.eval()
    x = torch.randn(5, 1, 16)
    with pytest.raises(RuntimeError, match="never set"):
        net(x)
    targets = torch.randn(50, 4, 8) + 3.0
    net.set_clip_mean(targets)
    u = targets.mean(0).flatten() / targets.mean(0).norm()
    backbone, clip_voxels, _ = net(x)
    raw = net.clip_proj(backbone).flatten(1)
    assert torch.allclose(clip_voxels.flatten(1) @ u, torch.zeros(5), atol=1e-5)
    torch.testing.assert_close(clip_voxels.flatten(1), raw - (raw @ u)[:, None] * u)
    assert "clip_mean" in net.state_dict()                                       # saved with the model
    assert "backbone.clip_mean" not in MindEyeModel(tiny_cfg()).state_dict()     # upstream's layout


def test_repeat_averaged_predictions_are_hubs_unless_the_mean_is_excluded():
    """The mechanism behind the demo's 0.08 image->brain retrieval, by hand: targets share one
    dominant direction; averaging three repeats shrinks a prediction's noise but not its shared
    part, so the best-averaged prediction is nearest to every image. Excluding the direction fixes it."""
    from fmri_recon.train.losses import flat_normalise
    from fmri_recon.evaluate.metrics.retrieval import topk_matches

    g = torch.Generator().manual_seed(0)
    n, d = 40, 400
    mean = torch.randn(d, generator=g)
    specific = torch.randn(n, d, generator=g)
    targets = 4 * mean + specific                                        # cos to the mean ~0.97
    reps = [0.3 * mean + 0.5 * specific + torch.randn(n, d, generator=g) for _ in range(3)]
    reps[1][1:], reps[2][1:] = reps[0][1:], reps[0][1:]                  # image 0 alone has 3 distinct repeats
    pred = torch.stack(reps).mean(0)
    net = MindEyeModel(BrainConfig(num_voxels=[3], hidden_dim=4, n_blocks=0, clip_seq_dim=1, clip_emb_dim=d,
                                   use_prior=False, clip_exclude_mean=True)).backbone
    net.set_clip_mean(targets[:, None])

    def image_to_brain(p):
        sim = flat_normalise(targets) @ flat_normalise(p).T               # rows: images, argmax over brains
        return float(topk_matches(sim).float().mean()), int((sim.argmax(1) == 0).sum())

    raw_top1, raw_hub = image_to_brain(pred)
    fixed_top1, fixed_hub = image_to_brain(net.exclude_mean(pred[:, None]))
    assert raw_hub > n // 2 and raw_top1 < 0.4                           # brain 0 is nearest to most images
    assert fixed_hub <= 2 and fixed_top1 > 0.8


def test_strict_round_trip_and_loud_n_blocks_mismatch():
    torch.manual_seed(0)
    cfg = tiny_cfg(use_prior=True)
    model = MindEyeModel(cfg).eval()
    clone = MindEyeModel(BrainConfig.from_dict(cfg.to_dict())).eval()
    clone.load_state_dict(copy.deepcopy(model.state_dict()), strict=True)
    x = torch.randn(2, 1, 30)
    assert torch.equal(model(x, 0)[0], clone(x, 0)[0])
    # the seed silently dropped keys when n_blocks differed: a strict load must refuse
    for other in (1, 3):
        with pytest.raises(RuntimeError, match="mixer_blocks1"):
            MindEyeModel(tiny_cfg(use_prior=True, n_blocks=other)).load_state_dict(model.state_dict(), strict=True)
    with pytest.raises(ValueError):
        BrainConfig.from_dict({**cfg.to_dict(), "seq_len": 1})


# ----------------------------------------------------------------------------- diffusion prior

def tiny_prior(**kw):
    return BrainDiffusionPrior(PriorConfig(**{**dict(dim=32, depth=2, dim_head=16, heads=2, num_tokens=4), **kw}))


def test_activation_checkpointing_keeps_loss_and_gradients():
    torch.manual_seed(0)
    plain = tiny_prior().train()
    saving = copy.deepcopy(plain)
    saving.net.causal_transformer.activation_checkpointing = True
    brain, image = torch.randn(3, 4, 32), torch.randn(3, 4, 32)
    times, noise = torch.tensor([5, 50, 90]), torch.randn(3, 4, 32)
    results = []
    for model in (plain, saving):
        torch.manual_seed(1)                         # the same condition dropout in both
        loss, _ = model(brain, image, times=times, noise=noise)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (la, ga), (lb, gb) = results
    assert torch.equal(la, lb) and ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-7, msg=name)


def test_ddim_time_pairs():
    pairs = ddim_time_pairs(100, 20)
    times = [t for t, _ in pairs] + [pairs[-1][1]]
    assert times == [94, 89, 84, 79, 74, 69, 64, 59, 54, 49, 44, 39, 34, 29, 24, 19, 14, 9, 4, -1]
    assert all(a == b for (_, a), (b, _) in zip(pairs, pairs[1:]))


def test_rel_pos_bias_buckets():
    bias = RelPosBias(heads=1)
    rel = torch.tensor([5, 1, 0, -1, -15, -16, -32, -127, -128, -1000])   # j - i
    assert bias.bucket(rel).tolist() == [0, 0, 0, 1, 15, 16, 21, 31, 31, 31]
    assert bias(3, 4).shape == (1, 3, 4)


def test_attention_matches_reference():
    torch.manual_seed(0)
    prior = tiny_prior()
    attn = prior.net.causal_transformer.layers[0][0]
    bias = prior.net.causal_transformer.rel_pos_bias(6, 7)
    x = torch.randn(3, 6, 32)
    # reference: softmax(16 cos(q,k) + bias) v with rotary q/k, null k/v first
    h = attn.norm(x)
    q = attn.to_q(h).view(3, 6, 2, 16).transpose(1, 2)
    k, v = attn.to_kv(h).chunk(2, dim=-1)
    q, k = attn.rotary_emb.rotate(q), attn.rotary_emb.rotate(k)
    k = torch.cat((attn.null_kv[0].expand(3, 1, 16), k), 1)
    v = torch.cat((attn.null_kv[1].expand(3, 1, 16), v), 1)
    cos = torch.einsum("bhid,bjd->bhij", torch.nn.functional.normalize(q, dim=-1),
                       torch.nn.functional.normalize(k, dim=-1))
    out = torch.einsum("bhij,bjd->bhid", (16 * cos + bias).softmax(-1), v)
    ref = attn.to_out(out.transpose(1, 2).reshape(3, 6, 32))
    assert torch.allclose(attn(x, bias), ref, atol=1e-5)


def test_prior_learns():
    torch.manual_seed(0)
    prior = tiny_prior(cond_drop_prob=0.0)
    brain, target = torch.randn(8, 4, 32), torch.randn(8, 4, 32)
    times, noise = torch.randint(0, 100, (8,)), torch.randn(8, 4, 32)

    def eval_loss():
        with torch.no_grad():
            return prior(text_embed=brain, image_embed=target, times=times, noise=noise)[0].item()

    start = eval_loss()
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    for _ in range(30):
        loss, pred = prior(text_embed=brain, image_embed=target)
        assert loss.ndim == 0 and torch.isfinite(loss) and pred.shape == target.shape
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.8 * start  # seed 0: about 0.56x


def test_p_sample_loop_shape_determinism_and_times():
    torch.manual_seed(0)
    prior = tiny_prior().eval()
    brain = torch.randn(2, 4, 32)
    seen = []
    forward = prior.net.forward

    def spy(image_embed, times, *args, **kw):
        seen.append(int(times[0]))
        return forward(image_embed, times, *args, **kw)

    prior.net.forward = spy
    a = prior.p_sample_loop((2, 4, 32), {"text_embed": brain}, timesteps=20, generator=torch.Generator().manual_seed(1))
    assert seen == [94, 89, 84, 79, 74, 69, 64, 59, 54, 49, 44, 39, 34, 29, 24, 19, 14, 9, 4]
    b = prior.p_sample_loop((2, 4, 32), brain, timesteps=20, generator=torch.Generator().manual_seed(1))
    c = prior.p_sample_loop((2, 4, 32), brain, timesteps=20, generator=torch.Generator().manual_seed(2))
    assert a.shape == (2, 4, 32) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    # cond_scale != 1 adds an unconditional pass per step; the full-T loop is DDPM
    assert prior.p_sample_loop((2, 4, 32), brain, cond_scale=2.0, timesteps=5).shape == (2, 4, 32)
    assert prior.p_sample_loop((1, 4, 32), brain[:1], timesteps=100).shape == (1, 4, 32)


def test_noise_schedule():
    ns = tiny_prior().noise_scheduler
    assert ns.betas.max() <= 0.999 and ns.betas.min() > 0
    assert torch.all(ns.alphas_cumprod[1:] < ns.alphas_cumprod[:-1])
    assert ns.alphas_cumprod_prev[0] == 1 and torch.equal(ns.alphas_cumprod_prev[1:], ns.alphas_cumprod[:-1])
    assert torch.allclose(ns.sqrt_alphas_cumprod ** 2 + ns.sqrt_one_minus_alphas_cumprod ** 2, torch.ones(100))
    assert torch.equal(ns.p2_loss_weight, torch.ones(100))
