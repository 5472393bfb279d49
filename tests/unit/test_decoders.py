"""Decoding stages on tiny random models of the real classes, built into folders and loaded back
through from_pretrained: the unCLIP decoder (upstream's sampler and quirks), the sgm checkpoint
conversion, GIT captions from given features, and SDXL img2img refinement."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fmri_recon.decode import weights
from fmri_recon.decode.captions import GitCaptioner
from fmri_recon.decode.refine import UPSTREAM_NEGATIVE, UPSTREAM_STRENGTH, load_pipeline, refine
from fmri_recon.decode.unclip import TIME_IDS, UnclipDecoder, _scheduler, sgm_timesteps

SEQ, DIM = 8, 24            # tiny bigG-like token grid
FAST = dict(num_steps=4, guidance=5.0, batch_size=2)
REFINE = dict(steps=25, guidance=5.0, batch_size=4)     # upstream's refinement (size and seed per test)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run faster on one thread, and far faster when other jobs share the 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    return {"unclip": weights.build_tiny_unclip(root / "unclip", context_dim=DIM, seq_len=SEQ),
            "git": weights.build_tiny_git(root / "git"),
            "sdxl": weights.build_tiny_sdxl_img2img(root / "sdxl")}


@pytest.fixture(scope="module")
def decoder(folders):
    return UnclipDecoder.from_pretrained(folders["unclip"])


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ unCLIP
def test_tiny_unclip_layout(folders):
    import json

    root = folders["unclip"]
    assert sorted(p.name for p in root.iterdir()) == ["decoder.json", "scheduler", "unet", "vae"]
    for sub in ("unet", "vae"):
        assert (root / sub / "config.json").is_file()
        assert (root / sub / "diffusion_pytorch_model.safetensors").is_file()
    meta = json.loads((root / "decoder.json").read_text())
    assert meta == {"context_dim": DIM, "seq_len": SEQ, "image_size": 64, "vae_scale_factor": 0.13025,
                    "output_transform": "x*0.8+0.2"}


def test_schedule_is_upstreams(decoder):
    """sgm LegacyDDPMDiscretization in float64: timesteps exactly, sigmas to float32 round-off."""
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=np.float64) ** 2
    alphas_cumprod = np.cumprod(1 - betas)
    steps = np.linspace(999, 0, 38, endpoint=False).astype(int)[::-1]      # ascending, as sgm
    sigmas = np.flip(((1 - alphas_cumprod[steps]) / alphas_cumprod[steps]) ** 0.5)
    scheduler = _scheduler(decoder.scheduler_config, 38, "cpu")
    assert sgm_timesteps(38)[:3] == [999, 972, 946] and sgm_timesteps(38)[-1] == 26
    assert scheduler.timesteps.tolist() == sgm_timesteps(38) == list(np.flip(steps))
    assert len(scheduler.sigmas) == 39 and scheduler.sigmas[-1] == 0
    np.testing.assert_allclose(scheduler.sigmas[:-1].numpy(), sigmas, rtol=1e-5)
    assert abs(scheduler.sigmas[0].item() - 14.6146) < 1e-3
    assert sgm_timesteps(25) == list(range(999, 0, -40))      # = diffusers' "trailing" for 25 steps


def test_decode_shape_range_determinism(decoder):
    tokens = torch.randn(2, SEQ, DIM)
    a = decoder.decode(tokens, generator=gen(0), **FAST)
    b = decoder.decode(tokens, generator=gen(0), **FAST)
    c = decoder.decode(tokens, generator=gen(1), **FAST)
    assert a.shape == (2, 3, 64, 64) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match=re.escape(f"expected (B, {SEQ}, {DIM}), got (2, {SEQ}, {DIM + 1})")):
        decoder.decode(torch.randn(2, SEQ, DIM + 1), **FAST)


def test_unet_batch_never_exceeds_batch_size_and_the_result_does_not_depend_on_it(decoder, monkeypatch):
    sizes = []
    forward = decoder.unet.forward

    def spy(sample, *a, **kw):
        sizes.append(sample.shape[0])
        return forward(sample, *a, **kw)

    tokens = torch.randn(5, SEQ, DIM)
    whole = decoder.decode(tokens, generator=gen(3), **{**FAST, "batch_size": 5})
    monkeypatch.setattr(decoder.unet, "forward", spy)
    parts = decoder.decode(tokens, generator=gen(3), **FAST)
    assert max(sizes) == 2 * FAST["batch_size"] and sum(sizes) == 2 * 5 * FAST["num_steps"]   # cond + uncond
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-4)
    alone = decoder.decode(tokens[2:3], generator=gen(0), **FAST)        # images draw their noise in order:
    assert not torch.allclose(alone, whole[2:3], atol=1e-3)              # the third image's draws come third


def test_unconditional_input_is_random_tokens(decoder, monkeypatch):
    """QUIRK: the CFG uncond half is randn tokens; vector = (768, 768, 0, 0); upstream's 38 timesteps."""
    calls = []
    forward = decoder.unet.forward

    def spy(sample, timestep, encoder_hidden_states=None, added_cond_kwargs=None, **kw):
        calls.append((timestep.item(), encoder_hidden_states.clone(), added_cond_kwargs))
        return forward(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                       added_cond_kwargs=added_cond_kwargs, **kw)

    monkeypatch.setattr(decoder.unet, "forward", spy)
    tokens = torch.randn(2, SEQ, DIM) * 3 + 1
    decoder.decode(tokens, generator=gen(0), num_steps=38, guidance=5.0, batch_size=2)
    assert [t for t, _, _ in calls] == sgm_timesteps(38)
    context = calls[0][1]
    uncond, cond = context[:2], context[2:]
    assert torch.equal(cond, tokens)
    assert not torch.allclose(uncond, cond) and uncond.abs().sum() > 0
    assert abs(uncond.mean().item()) < 0.2 and abs(uncond.std().item() - 1) < 0.2     # standard normal
    assert all(torch.equal(c, context) for _, c, _ in calls)           # the same noise at every step
    added = calls[0][2]
    assert added["text_embeds"].shape == (4, 0)
    assert added["time_ids"].tolist() == [list(TIME_IDS)] * 4 == [[768, 768, 0, 0]] * 4


def test_output_transform_is_0_8x_plus_0_2(decoder, monkeypatch):
    from diffusers.models.autoencoders.vae import DecoderOutput

    seen = []
    for value, expected in [(0.25, 0.4), (-0.5, 0.0), (0.0, 0.2), (1.5, 1.0), (-0.25, 0.0)]:
        def constant(z, *a, value=value, **kw):
            seen.append(z)
            return DecoderOutput(sample=torch.full((z.shape[0], 3, 64, 64), value))

        monkeypatch.setattr(decoder.vae, "decode", constant)
        out = decoder.decode(torch.randn(1, SEQ, DIM), generator=gen(0), **{**FAST, "num_steps": 2})
        assert torch.allclose(out, torch.full_like(out, expected)), (value, out.unique())
    assert seen[0].shape == (1, 4, 8, 8)


# ------------------------------------------------------------------ sgm checkpoint conversion
# A tiny UNet/VAE with the real layout's structure (3 levels, first without attention, two res
# blocks per level, deeper transformers below), so the converter's index arithmetic is exercised.
SGM_UNET = dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
                attention_resolutions=(4, 2), transformer_depth=(1, 2, 2), num_head_channels=16,
                context_dim=DIM, adm_in_channels=1024)
SGM_VAE = dict(in_channels=3, out_ch=3, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=2, z_channels=4)


def _resnet_to_ldm(rest: str) -> str:
    return (rest.replace("norm1", "in_layers.0").replace("conv1", "in_layers.2").replace("norm2", "out_layers.0")
            .replace("conv2", "out_layers.3").replace("time_emb_proj", "emb_layers.1")
            .replace("conv_shortcut", "skip_connection"))


def unet_to_sgm(sd: dict, lpb: int, attention_levels: set[int], n_levels: int = len(SGM_UNET["channel_mult"])) -> dict:
    """Inverse of diffusers' convert_ldm_unet_checkpoint for an SDXL-layout UNet (written for the test)."""
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, v in sd.items():
        p = key.split(".")
        if ".".join(p[:2]) in fixed or p[0] in fixed:
            head = ".".join(p[:2]) if ".".join(p[:2]) in fixed else p[0]
            new = fixed[head] + key[len(head):]
        elif p[0] == "down_blocks":
            b, kind, rest = int(p[1]), p[2], ".".join(p[4:])
            if kind == "downsamplers":
                new = f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op.{'.'.join(p[5:])}"
            else:
                i = 1 + b * (lpb + 1) + int(p[3])
                new = (f"input_blocks.{i}.0.{_resnet_to_ldm(rest)}" if kind == "resnets"
                       else f"input_blocks.{i}.1.{rest}")
        elif p[0] == "mid_block":
            j, rest = int(p[2]), ".".join(p[3:])
            new = f"middle_block.{2 * j}.{_resnet_to_ldm(rest)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
        elif p[0] == "up_blocks":
            b, kind = int(p[1]), p[2]
            if kind == "upsamplers":
                has_attn = (n_levels - 1 - b) in attention_levels
                new = f"output_blocks.{b * (lpb + 1) + lpb}.{2 if has_attn else 1}.conv.{'.'.join(p[5:])}"
            else:
                i, rest = b * (lpb + 1) + int(p[3]), ".".join(p[4:])
                new = (f"output_blocks.{i}.0.{_resnet_to_ldm(rest)}" if kind == "resnets"
                       else f"output_blocks.{i}.1.{rest}")
        else:
            raise KeyError(key)
        out[new] = v
    return out


def vae_to_ldm(sd: dict, n_levels: int) -> dict:
    """Inverse of diffusers' convert_ldm_vae_checkpoint (1x1-conv attention as in LDM)."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, v in sd.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", new)
        if m:
            part, _, i, kind, j, rest = m.groups()
            i = int(i) if part == "encoder" else n_levels - 1 - int(i)       # LDM numbers up blocks bottom-up
            new = {"resnets": f"{part}.{'down' if part == 'encoder' else 'up'}.{i}.block.{j}.{rest}",
                   "downsamplers": f"{part}.down.{i}.downsample.{rest}",
                   "upsamplers": f"{part}.up.{i}.upsample.{rest}"}[kind]
        m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)", new)
        if m:
            part, kind, j, rest = m.groups()
            if kind == "resnets":
                new = f"{part}.mid.block_{int(j) + 1}.{rest}"
            else:
                name, leaf = rest.rsplit(".", 1)
                new = f"{part}.mid.attn_1.{attn[name]}.{leaf}"
                if leaf == "weight" and name != "group_norm":
                    v = v[:, :, None, None]                 # LDM attention uses 1x1 convs
        out[new] = v
    return out


def _sgm_checkpoint(path, seed=0):
    """A tiny sgm-layout checkpoint and the diffusers state dicts it came from."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**weights.unet_config(SGM_UNET, 8))
    vae = AutoencoderKL(**weights.vae_config(SGM_VAE, 64))
    levels = {i for i in range(3) if 2 ** i in SGM_UNET["attention_resolutions"]}
    usd, vsd = unet.state_dict(), vae.state_dict()
    state = {f"model.diffusion_model.{k}": v.clone() for k, v in unet_to_sgm(usd, 2, levels).items()}
    state.update({f"first_stage_model.{k}": v.clone() for k, v in vae_to_ldm(vsd, 4).items()})
    assert len(state) == len(usd) + len(vsd)
    # not part of the decoder: ignored by the conversion
    state.update({"denoiser.sigmas": torch.rand(1000), "conditioner.embedders.0.proj": torch.rand(3, 3),
                  "first_stage_model.loss.logvar": torch.zeros(())})
    return state, usd, vsd


def _convert(tmp_path, state, name):
    ckpt = tmp_path / f"{name}.ckpt"
    torch.save({"state_dict": state, "global_step": 110000}, ckpt)
    return weights.convert_unclip_checkpoint(ckpt, tmp_path / name, unet_params=SGM_UNET, vae_params=SGM_VAE,
                                             image_size=64, seq_len=SEQ)


def test_convert_sgm_checkpoint_round_trip(tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    state, usd, vsd = _sgm_checkpoint(tmp_path)
    out = _convert(tmp_path, state, "decoder")
    unet = UNet2DConditionModel.from_pretrained(out / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(out / "vae", local_files_only=True)
    for original, loaded in ((usd, unet.state_dict()), (vsd, vae.state_dict())):
        assert loaded.keys() == original.keys()
        bad = [k for k in original if not torch.equal(original[k], loaded[k])]
        assert not bad, bad[:5]
    assert unet.config.addition_embed_type == "text_time"
    assert unet.config.projection_class_embeddings_input_dim == 1024
    assert unet.config.cross_attention_dim == DIM
    decoder = UnclipDecoder.from_pretrained(out)           # the converted folder decodes
    assert decoder.decode(torch.randn(1, SEQ, DIM), generator=gen(0), **{**FAST, "num_steps": 2}).shape == (1, 3, 64, 64)


def test_convert_uses_the_raw_unet_weights_and_refuses_an_unpruned_label_emb(tmp_path):
    """Upstream's engine has no EMA (use_ema=False): sgm's LitEma keys, were a file to hold them,
    are not its decoder. Its label_emb is already pruned to adm_in_channels: a wider one fails,
    named, rather than being cut."""
    from diffusers import UNet2DConditionModel

    state, usd, _ = _sgm_checkpoint(tmp_path)
    unet_keys = [k for k in state if k.startswith("model.diffusion_model.")]
    ema = dict(state, **{"model_ema." + "".join(k.split(".")[1:]): state[k] + 1 for k in unet_keys})
    unet = UNet2DConditionModel.from_pretrained(_convert(tmp_path, ema, "ema") / "unet", local_files_only=True)
    assert all(torch.equal(unet.state_dict()[k], usd[k]) for k in usd)
    key = "model.diffusion_model.label_emb.0.0.weight"
    wide = dict(state, **{key: torch.cat([state[key], state[key]], 1)})
    with pytest.raises(RuntimeError, match=r"add_embedding\.linear_1\.weight.*torch\.Size\(\[\d+, 2048\]\)"):
        _convert(tmp_path, wide, "wide")


def test_convert_names_bad_keys(tmp_path):
    state, _, _ = _sgm_checkpoint(tmp_path)
    extra = dict(state, **{"model.diffusion_model.stray.weight": torch.ones(2)})
    with pytest.raises(ValueError, match=r"no diffusers counterpart.*model\.diffusion_model\.stray\.weight"):
        _convert(tmp_path, extra, "extra")
    missing = dict(state)
    del missing["model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"]
    with pytest.raises(ValueError, match=re.escape(
            "missing keys ['down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight']")):
        _convert(tmp_path, missing, "missing")
    # diffusers' converter drops an upsampler's bias when its weight is absent: caught, and named
    orphan = {k: v for k, v in state.items() if k != "model.diffusion_model.output_blocks.2.2.conv.weight"}
    with pytest.raises(ValueError, match=r"no diffusers counterpart.*output_blocks\.2\.2\.conv\.bias"):
        _convert(tmp_path, orphan, "orphan")
    vae_missing = {k: v for k, v in state.items() if k != "first_stage_model.decoder.mid.attn_1.q.bias"}
    with pytest.raises(ValueError, match=r"VAE: missing keys \['decoder\.mid_block\.attentions\.0\.to_q\.bias'\]"):
        _convert(tmp_path, vae_missing, "vae_missing")
    assert not (tmp_path / "extra").exists() and not (tmp_path / "missing").exists()


def test_real_unet_config_matches_sdxl_unclip():
    """unclip6's UNet: SDXL's block layout with context 1664 and a 1024-wide vector."""
    cfg = weights.unet_config(weights.UNCLIP6_UNET, 96)
    assert cfg["block_out_channels"] == [320, 640, 1280]
    assert cfg["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert cfg["up_block_types"] == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert cfg["attention_head_dim"] == [5, 10, 20] and cfg["transformer_layers_per_block"] == [1, 2, 10]
    assert cfg["cross_attention_dim"] == 1664 and cfg["projection_class_embeddings_input_dim"] == 1024
    assert weights.vae_config(weights.SDXL_VAE, 768)["block_out_channels"] == [128, 256, 512, 512]


# ------------------------------------------------------------------ GIT captions
@pytest.fixture(scope="module")
def captioner(folders):
    return GitCaptioner.from_pretrained(folders["git"])


def test_git_captions_from_features(captioner, folders):
    vocab = set(captioner.processor.tokenizer.get_vocab()) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert set(weights.CAPTION_WORDS.split()) <= vocab
    t, d = captioner.feature_shape
    assert (t, d) == (17, 32)
    features = torch.randn(3, t, d, generator=gen(0))
    captions = captioner.caption(features, max_length=20)
    assert captions == captioner.caption(features, max_length=20)                      # greedy: deterministic
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    for c in captions:
        words = c.split()
        assert 1 <= len(words) <= 19 and set(words) <= vocab, c         # max_length 20 includes BOS
    assert len(set(captions)) > 1                                       # the features matter


def test_git_feature_shape_is_checked(captioner):
    with pytest.raises(ValueError, match=re.escape("expected (B, 17, 32), got (2, 17, 31)")):
        captioner.caption(torch.randn(2, 17, 31), max_length=20)
    with pytest.raises(ValueError, match=re.escape("expected (B, 17, 32), got (2, 16, 32)")):
        captioner.caption(torch.randn(2, 16, 32), max_length=20)


def test_git_image_features(captioner):
    images = torch.rand(2, 3, 48, 40, generator=gen(0))
    feats = captioner.image_features(images)
    assert feats.shape == (2, 17, 32) and feats.dtype == torch.float32
    assert torch.equal(feats, captioner.image_features(images))
    assert all(isinstance(c, str) and c for c in captioner.caption(feats, max_length=20))


# ------------------------------------------------------------------ SDXL refinement
@pytest.fixture(scope="module")
def pipe(folders):
    return load_pipeline(folders["sdxl"])


def test_tiny_sdxl_layout(folders):
    names = sorted(p.name for p in folders["sdxl"].iterdir())
    assert names == ["model_index.json", "scheduler", "text_encoder", "text_encoder_2", "tokenizer",
                     "tokenizer_2", "unet", "vae"]


def test_clip_tokenizer_is_clips(pipe):
    """Rebuilt offline from open_clip's BPE file: the same ids as open_clip's own tokenizer."""
    import open_clip

    reference = open_clip.get_tokenizer("ViT-L-14")([UPSTREAM_NEGATIVE])[0]
    ids = pipe.tokenizer(UPSTREAM_NEGATIVE).input_ids
    assert len(pipe.tokenizer) == 49408 and ids == reference[:len(ids)].tolist() and len(ids) == 72
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.model_max_length == 77


def test_negative_prompt_and_strength_are_upstreams():
    assert UPSTREAM_NEGATIVE == (
        "painting, extra fingers, mutated hands, poorly drawn hands, poorly drawn face, deformed, ugly, blurry, "
        "bad anatomy, bad proportions, extra limbs, cloned face, skinny, glitchy, double torso, extra arms, "
        "extra hands, mangled fingers, missing lips, ugly face, distorted face, extra legs, anime")
    assert UPSTREAM_STRENGTH == 12 / 25


def test_refine(pipe, monkeypatch):
    images = torch.rand(2, 3, 256, 256, generator=gen(0))
    prompts = ["a dog on the grass", "a red bus on a street"]
    calls = []
    forward = pipe.unet.forward

    def spy(sample, timestep, *a, **kw):
        calls.append((timestep.item(), tuple(sample.shape), kw["added_cond_kwargs"]["time_ids"].clone()))
        return forward(sample, timestep, *a, **kw)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    a = refine(pipe, images, prompts, **REFINE, size=64, seed=0)
    assert a.shape == (2, 3, 256, 256) and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    # upstream: start at sigmas[13] of the 25-step schedule (t=479), 12 Euler steps, CFG batch
    assert [t for t, _, _ in calls] == sgm_timesteps(25)[13:]
    assert calls[0][1] == (4, 4, 8, 8)
    assert calls[0][2].tolist() == [[768, 768, 0, 0, 1024, 1024]] * 4
    calls.clear()
    monkeypatch.setattr(pipe.unet, "forward", forward)
    assert torch.equal(a, refine(pipe, images, prompts, **REFINE, size=64, seed=0))
    assert not torch.allclose(a, refine(pipe, images, prompts, **REFINE, size=64, seed=1))
    swapped = refine(pipe, images, prompts[::-1], **REFINE, size=64, seed=0)       # prompts reach the text encoders
    assert not torch.allclose(a[0], swapped[0]) and not torch.allclose(a[1], swapped[1])
    with pytest.raises(ValueError, match="1 prompts for 2 images"):
        refine(pipe, images, prompts[:1], **REFINE, size=64, seed=0)


def test_refined_images_are_resized_as_upstream_and_the_metrics_do():
    """768 -> 256 without antialiasing (torchvision 0.16's tensor Resize), the same as reconstruct
    and the evaluation: one helper, fmri_recon.resize."""
    from types import SimpleNamespace

    from fmri_recon import resize
    from fmri_recon.evaluate.metrics.image import resize_256

    stripes = torch.zeros(1, 3, 768, 768)
    stripes[..., ::2] = 1.0                                   # antialiasing would average them to grey
    seen = []

    def fake_pipe(image, **kw):
        seen.append(image)
        return SimpleNamespace(images=stripes)

    out = refine(fake_pipe, torch.rand(1, 3, 256, 256), ["x"], **REFINE, size=768, seed=0)
    assert seen[0].shape == (1, 3, 768, 768)
    torch.testing.assert_close(out, resize.to_output_size(stripes))
    torch.testing.assert_close(out, resize_256(stripes))
    smooth = torch.nn.functional.interpolate(stripes, size=(256, 256), mode="bilinear", antialias=True)
    assert (out - smooth).abs().max() > 0.3


def open_clip_text_to_ldm(sd: dict) -> dict:
    """Inverse of diffusers' convert_open_clip_checkpoint: CLIPTextModelWithProjection -> open_clip keys."""
    out = {"positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           "text_projection": sd["text_projection.weight"].T.contiguous()}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    layers = {int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")}
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for leaf in ("weight", "bias"):
            out[dst + f"attn.in_proj_{leaf}"] = torch.cat([sd[src + f"self_attn.{q}_proj.{leaf}"] for q in "qkv"])
            for a, b in names.items():
                out[dst + f"{b}.{leaf}"] = sd[src + f"{a}.{leaf}"]
    return out


def sdxl_single_file(folder, path):
    """A tiny SD-XL pipeline folder written as one original-format .safetensors (as ZavyChromaXL is)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from safetensors.torch import save_file

    p = StableDiffusionXLImg2ImgPipeline.from_pretrained(folder, local_files_only=True)
    levels = {i for i in range(2) if 2 ** i in weights.TINY_UNET["attention_resolutions"]}
    state = {f"model.diffusion_model.{k}": v for k, v in
             unet_to_sgm(p.unet.state_dict(), weights.TINY_UNET["num_res_blocks"], levels, n_levels=2).items()}
    state |= {f"first_stage_model.{k}": v for k, v in vae_to_ldm(p.vae.state_dict(), 4).items()}
    state |= {f"conditioner.embedders.0.transformer.{k if k.startswith('text_model.') else 'text_model.' + k}": v
              for k, v in p.text_encoder.state_dict().items()}        # transformers v5 drops the text_model. prefix
    state |= {f"conditioner.embedders.1.model.{k}": v for k, v in open_clip_text_to_ldm(p.text_encoder_2.state_dict()).items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return p


def test_single_file_sdxl_checkpoint_loads_offline_with_the_configs_folder(folders, tmp_path, pipe, monkeypatch):
    """refine.base: file:<zavychromaxl_v30.safetensors> on a node without internet: the SD-XL
    configs and tokenizers come from a local folder (weights.SDXL_CONFIG_PATTERNS of SD-XL base)."""
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original = sdxl_single_file(folders["sdxl"], tmp_path / "zavy.safetensors")
    configs = tmp_path / "configs"
    shutil.copytree(folders["sdxl"], configs, ignore=shutil.ignore_patterns("*.safetensors"))   # configs only
    loaded = load_pipeline(tmp_path / "zavy.safetensors", single_file_config=configs)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        bad = [k for k in want if k not in got or not torch.allclose(want[k], got[k])]
        assert not bad and len(got) == len(want), (name, bad[:5])
    images, prompts = torch.rand(1, 3, 256, 256, generator=gen(0)), ["a dog"]
    torch.testing.assert_close(refine(loaded, images, prompts, **REFINE, size=64, seed=0),
                               refine(pipe, images, prompts, **REFINE, size=64, seed=0))
    (tmp_path / "zavy.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"zavy.ckpt: a single-file SDXL checkpoint must be \.safetensors"):
        load_pipeline(tmp_path / "zavy.ckpt", single_file_config=configs)


def test_refine_sends_negative_prompt(pipe, monkeypatch):
    seen = {}
    encode = pipe.encode_prompt

    def spy(*a, **kw):
        seen.update(kw)
        return encode(*a, **kw)

    monkeypatch.setattr(pipe, "encode_prompt", spy)
    refine(pipe, torch.rand(1, 3, 256, 256), ["a cat"], **REFINE, size=64, seed=0)
    assert seen["negative_prompt"] == [UPSTREAM_NEGATIVE]
    assert seen["prompt"] == ["a cat"]
