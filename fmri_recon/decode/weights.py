"""Pretrained models of the decoding stages: fetch, convert, or build tiny random ones.

Every model ends up as a folder written by ``save_pretrained`` (a config.json next to the
weights) and is read back with ``from_pretrained(dir, local_files_only=True)``, so the demo and
the tests run exactly the loading code of a real run.

Folder layouts
- unCLIP decoder (``build_tiny_unclip``, ``convert_unclip_checkpoint``)::

      unet/        UNet2DConditionModel   (config.json, diffusion_pytorch_model.safetensors)
      vae/         AutoencoderKL          (idem; 3 downsamples: latents are image/8, 4 channels)
      scheduler/   EulerDiscreteScheduler (scheduler_config.json; upstream's 1000-step schedule)
      decoder.json {"context_dim", "seq_len", "image_size", "vae_scale_factor", "output_transform"}
      token_stats.safetensors  only a trained tiny decoder's (decoder_training): how its
                   conditioning tokens are standardised before the UNet sees them

- SDXL img2img (``build_tiny_sdxl_img2img``; the real one is a snapshot of ``SDXL_BASE``)::

      model_index.json, unet/, vae/, scheduler/, text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/

- GIT captioner (``build_tiny_git``; the real one is a snapshot of ``GIT_LARGE_COCO``)::

      config.json, generation_config.json, model.safetensors, processor/tokenizer/image-processor files

Facts: docs/upstream.md §3.3, §3.4 and §4.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

from fmri_recon.decode.unclip import COORD_CHANNELS, OUTPUT_TRANSFORM, UNCLIP_DECODER_JSON, UPSTREAM_EULER
from fmri_recon import helpers

log = logging.getLogger(__name__)

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
GIT_LARGE_COCO = "microsoft/git-large-coco"

# What a real run fetches of each repository (allow_patterns of ``snapshot``).
# The full SDXL base pipeline in fp32 (about 14 GB): refinement from a folder.
SDXL_BASE_PATTERNS = ("model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*",
                      "text_encoder/config.json", "text_encoder/model.safetensors",
                      "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
                      "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                      "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
# Configs and tokenizers only: what ``from_single_file`` needs next to a single-file SDXL
# checkpoint such as upstream's zavychromaxl_v30.safetensors (same architecture as SDXL base).
SDXL_CONFIG_PATTERNS = ("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*")
GIT_PATTERNS = ("*.json", "*.txt", "*.safetensors")

SDXL_VAE_SCALE_FACTOR = 0.13025      # sgm's scale_factor of the SDXL KL-f8 VAE

# sgm/LDM architecture parameters (the keys of the yaml ``network_config.params``).
# unclip6.yaml's UNet: SDXL's with context 1664 (bigG tokens) and a 1024-dim vector
# (original size + crop, 4 x 256 sinusoidal features).
UNCLIP6_UNET = dict(in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4), num_res_blocks=2,
                    attention_resolutions=(4, 2), transformer_depth=(1, 2, 10), num_head_channels=64,
                    context_dim=1664, adm_in_channels=1024)
# SDXL's KL-f8 first stage (ddconfig).
SDXL_VAE = dict(in_channels=3, out_ch=3, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4)
UNCLIP_IMAGE_SIZE = 768              # upstream samples 96x96 latents -> 768x768 images
UNCLIP_SEQ_LEN = 256                 # bigG tokens

# Tiny stand-ins of the same classes (CPU, milliseconds). Channels are multiples of 32 because
# LDM/SDXL GroupNorms have 32 groups, which the converter relies on.
TINY_UNET = dict(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(2,), transformer_depth=(1, 1), num_head_channels=16,
                 context_dim=None, adm_in_channels=1024)
TINY_SDXL_VAE = dict(in_channels=3, out_ch=3, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=4)
TINY_IMAGE_SIZE = 64                 # 8x8 latents


# ------------------------------------------------------------------ real weights
def snapshot(repo_id: str, out_dir: str | Path, allow_patterns) -> Path:
    """Download the files of ``repo_id`` matching ``allow_patterns`` into ``out_dir`` (resumable)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, local_dir=str(out_dir), allow_patterns=list(allow_patterns)))


# ------------------------------------------------------------------ configs
def unet_config(p: dict, sample_size: int) -> dict:
    """diffusers ``UNet2DConditionModel`` kwargs of an sgm SDXL-style UNet with parameters ``p``.

    Level i (of ``channel_mult``) has cross-attention iff its downsampling factor 2**i is in
    ``attention_resolutions`` (sgm's rule); diffusers' ``attention_head_dim`` is, despite its
    name, the number of heads per level (channels // num_head_channels). The vector input
    (sgm ``label_emb``, ``adm_in_channels`` wide) becomes diffusers' ``text_time`` embedding:
    256 sinusoidal features per size/crop number, no pooled text (``text_embeds`` of width 0).
    """
    channels = [p["model_channels"] * m for m in p["channel_mult"]]
    attn = [2 ** i in p["attention_resolutions"] for i in range(len(channels))]
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    return dict(sample_size=sample_size, in_channels=p["in_channels"], out_channels=p["out_channels"],
                down_block_types=down, up_block_types=up, block_out_channels=channels,
                layers_per_block=p["num_res_blocks"],
                attention_head_dim=[c // p["num_head_channels"] for c in channels],
                transformer_layers_per_block=list(p["transformer_depth"]),
                use_linear_projection=True,               # sgm use_linear_in_transformer
                cross_attention_dim=p["context_dim"],
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=p["adm_in_channels"])


def vae_config(p: dict, sample_size: int, scaling_factor: float = SDXL_VAE_SCALE_FACTOR) -> dict:
    """diffusers ``AutoencoderKL`` kwargs of an LDM/sgm KL autoencoder with ddconfig ``p``."""
    n = len(p["ch_mult"])
    return dict(in_channels=p["in_channels"], out_channels=p["out_ch"], latent_channels=p["z_channels"],
                block_out_channels=[p["ch"] * m for m in p["ch_mult"]], layers_per_block=p["num_res_blocks"],
                down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                sample_size=sample_size, scaling_factor=scaling_factor, force_upcast=True)


def upstream_scheduler():
    """EulerDiscreteScheduler with upstream's training schedule (1000 steps, scaled-linear betas)."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(**UPSTREAM_EULER)


# ------------------------------------------------------------------ helpers
@contextlib.contextmanager
def _seeded(seed: int):
    """Seed torch's global RNG for random initialisation without disturbing the caller's stream."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _write_decoder_json(folder: Path, context_dim: int, seq_len: int, image_size: int, coord_channels: int = 0) -> None:
    meta = {"context_dim": int(context_dim), "seq_len": int(seq_len), "image_size": int(image_size),
            "vae_scale_factor": SDXL_VAE_SCALE_FACTOR, "output_transform": OUTPUT_TRANSFORM}
    if coord_channels:            # the tiny trained decoder's deviation (fmri_recon.decode.unclip.COORD_CHANNELS)
        meta[COORD_CHANNELS] = int(coord_channels)
    helpers.write_json(folder / UNCLIP_DECODER_JSON, meta)


# ------------------------------------------------------------------ unCLIP decoder
def build_tiny_unclip(out_dir: str | Path, context_dim: int, seq_len: int, seed: int = 0,
                      image_size: int = TINY_IMAGE_SIZE, vae_params: dict = TINY_SDXL_VAE,
                      coord_channels: int = 0) -> Path:
    """A tiny random SDXL-unCLIP-like decoder folder (layout in the module docstring).

    Conditioned on (B, seq_len, context_dim) tokens; decodes (B, 3, image_size, image_size).
    ``coord_channels``: its UNet also reads the latent grid's coordinates (fmri_recon.decode.unclip).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    latent = image_size // 2 ** (len(vae_params["ch_mult"]) - 1)
    with helpers.atomic_dir(out_dir) as tmp, _seeded(seed):
        unet = unet_config({**TINY_UNET, "context_dim": context_dim}, latent)
        unet["in_channels"] += coord_channels
        UNet2DConditionModel(**unet).save_pretrained(tmp / "unet")
        AutoencoderKL(**vae_config(vae_params, image_size)).save_pretrained(tmp / "vae")
        upstream_scheduler().save_pretrained(tmp / "scheduler")
        _write_decoder_json(tmp, context_dim, seq_len, image_size, coord_channels)
    return Path(out_dir)


def _unconsumed(source: dict, converted: dict) -> list[str]:
    """Keys of ``source`` whose tensors the diffusers converter did not carry over.

    The converters move tensors (or views of them, for the VAE's 1x1-conv attention) without
    copying, so a source tensor was used iff its storage pointer appears among the outputs.
    """
    used = {v.data_ptr() for v in converted.values()}
    return sorted(k for k, v in source.items() if v.numel() and v.data_ptr() not in used)


def _load_converted(cls, config: dict, converted: dict, source: dict, what: str):
    """Instantiate ``cls(**config)`` on the meta device and assign ``converted``; all keys must match."""
    import torch

    absent = sorted(k for k, v in converted.items() if v is None)     # a key the converter expected
    if absent:
        raise ValueError(f"{what}: the checkpoint has no tensor for {absent[:20]} ({len(absent)})")
    left = _unconsumed(source, converted)
    if left:
        raise ValueError(f"{what}: {len(left)} checkpoint keys have no diffusers counterpart: {left[:20]}")
    with torch.device("meta"):
        model = cls(**config)
    state = {k: v.contiguous() for k, v in converted.items()}     # safetensors wants contiguous tensors
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{what}: missing keys {sorted(result.missing_keys)[:20]} "
                         f"({len(result.missing_keys)}), unexpected keys "
                         f"{sorted(result.unexpected_keys)[:20]} ({len(result.unexpected_keys)})")
    meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if meta:
        raise ValueError(f"{what}: tensors not set by the checkpoint: {meta[:20]}")
    return model


def convert_unclip_checkpoint(sgm_ckpt: str | Path, out_dir: str | Path, *, unet_params: dict = UNCLIP6_UNET,
                              vae_params: dict = SDXL_VAE, image_size: int = UNCLIP_IMAGE_SIZE,
                              seq_len: int = UNCLIP_SEQ_LEN) -> Path:
    """Convert MindEye2's sgm checkpoint (``unclip6_epoch0_step110000.ckpt``) to the decoder folder.

    The file holds ``{'state_dict': ...}`` with sgm keys ``model.diffusion_model.*`` (UNet) and
    ``first_stage_model.*`` (VAE); other keys (``conditioner.*``, ``denoiser.*``, ...) are not
    part of the decoder and are ignored. diffusers' own single-file converters rename the keys;
    every UNet/VAE key of the checkpoint must land on a diffusers parameter and every parameter
    must be set, else ``ValueError`` names the keys. Writes the layout of the module docstring.

    The file is a PyTorch Lightning checkpoint (optimizer and scheduler states, callbacks,
    hyper-parameters beside ``state_dict``): only ``state_dict`` is read, memory-mapped, and the
    rest is never unpickled (fmri_recon.data.released). Upstream builds its engine without EMA
    (``DiffusionEngine(...)`` has ``use_ema=False``, so ``ema_scope()`` changes nothing) and loads
    the file strictly, so the published file has no ``model_ema.*`` keys and its ``label_emb``
    already has ``adm_in_channels`` columns (the Pruner ran in training): the raw UNet weights
    are the decoder, and a file of another width fails with its shapes named.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (LDM_UNET_KEY, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)

    from fmri_recon.data import released

    sgm_ckpt = Path(sgm_ckpt)
    state = released.tensors(released.item(released.load(sgm_ckpt, mmap=True), "state_dict", sgm_ckpt),
                             sgm_ckpt, "state_dict")
    source = {k: v for k, v in state.items() if k.startswith(LDM_UNET_KEY)}
    ucfg = unet_config(unet_params, image_size // 8)
    unet_sd = convert_ldm_unet_checkpoint(state, ucfg)
    unet = _load_converted(UNet2DConditionModel, ucfg, unet_sd, source, f"{sgm_ckpt.name} UNet")

    vcfg = vae_config(vae_params, image_size)
    vae_source = {k: v for k, v in state.items() if k.startswith("first_stage_model.")
                  and not k.startswith("first_stage_model.loss.")}        # training-only discriminator
    if not vae_source:
        raise ValueError(f"{sgm_ckpt}: no first_stage_model.* keys (the VAE)")
    vae_sd = convert_ldm_vae_checkpoint(vae_source, vcfg)
    vae = _load_converted(AutoencoderKL, vcfg, vae_sd, vae_source, f"{sgm_ckpt.name} VAE")

    with helpers.atomic_dir(out_dir) as tmp:
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        upstream_scheduler().save_pretrained(tmp / "scheduler")
        _write_decoder_json(tmp, unet_params["context_dim"], seq_len, image_size)
    return Path(out_dir)


# ------------------------------------------------------------------ SDXL img2img
def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level BPE alphabet: one printable character per byte value (as in GPT-2)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


def write_clip_tokenizer(out_dir: str | Path, pad_token: str = "<|endoftext|>", max_length: int = 77):
    """OpenAI CLIP's exact BPE tokenizer (49408 tokens), rebuilt offline; saved to ``out_dir``, returned.

    The merges come from the BPE file that open_clip ships in its wheel; the vocabulary is built
    as CLIP's ``SimpleTokenizer`` builds it (bytes, bytes + "</w>", one token per merge, the two
    specials), which is the hub's vocab.json. transformers v5 ignores ``CLIPTokenizer(vocab_file=...)``,
    so the files go through a folder, and ``model_max_length`` must be given or SDXL overflows.
    SDXL pads its second tokenizer with "!" (``pad_token``).
    """
    import gzip

    import open_clip
    from transformers import CLIPTokenizer

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    chars = _bytes_to_unicode()
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m.split()) for m in merges),
             "<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as src:
        helpers.write_json(Path(src) / "vocab.json", {token: i for i, token in enumerate(vocab)})
        (Path(src) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = CLIPTokenizer.from_pretrained(src, model_max_length=max_length, pad_token=pad_token)
    tokenizer.save_pretrained(out_dir)
    return CLIPTokenizer.from_pretrained(out_dir)


def build_tiny_sdxl_img2img(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random ``StableDiffusionXLImg2ImgPipeline`` folder (layout in the module docstring).

    Same classes and conditioning as SDXL base: CLIP-L-like + bigG-like text encoders (the
    second with a projection: pooled text), penultimate hidden states concatenated as context,
    vector = pooled text + 6 size/crop numbers x 256 features.
    """
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with helpers.atomic_dir(out_dir) as tmp, _seeded(seed), tempfile.TemporaryDirectory() as scratch:
        tok = write_clip_tokenizer(Path(scratch) / "tokenizer")
        tok2 = write_clip_tokenizer(Path(scratch) / "tokenizer_2", pad_token="!")
        ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                   pad_token_id=tok.pad_token_id, max_position_embeddings=77, num_attention_heads=2,
                   num_hidden_layers=2, hidden_act="gelu")
        # widths differ, as in SD-XL (768 and 1280): diffusers' single-file loader tells the two
        # encoders apart by their width
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, **ids))
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(hidden_size=48, intermediate_size=96, projection_dim=48, **ids))
        # context = both encoders' penultimate states; vector = pooled text + 6 numbers x 256
        params = {**TINY_UNET, "context_dim": 32 + 48, "adm_in_channels": 48 + 6 * 256}
        unet = UNet2DConditionModel(**unet_config(params, TINY_IMAGE_SIZE // 8))
        vae = AutoencoderKL(**vae_config(TINY_SDXL_VAE, TINY_IMAGE_SIZE))
        pipe = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tok,
            tokenizer_2=tok2, unet=unet, scheduler=upstream_scheduler(),
            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False)
        pipe.save_pretrained(tmp)
    return Path(out_dir)


# ------------------------------------------------------------------ GIT
# Words of COCO-style captions: the tiny GIT vocabulary, so that
# what a random model generates decodes to English words.
CAPTION_WORDS = """
a an the of on in at with and to from by near next under over behind front top side some two three
four several many group couple pair man men woman women person people boy girl child children baby
player players skier surfer rider crowd dog dogs cat cats horse horses cow cows sheep elephant
elephants giraffe giraffes zebra zebras bear bird birds kite kites train bus truck car cars bike
bicycle motorcycle boat plane airplane street road sidewalk field grass beach ocean water snow
mountain hill sky tree trees building buildings city park table plate food pizza sandwich cake
donut bowl cup glass bottle banana bananas apple orange broccoli hot vegetables kitchen room bed
couch chair window door wall floor toilet sink bathroom mirror clock sign light traffic fire
hydrant bench umbrella bag suitcase laptop computer keyboard phone television tv book books vase
flowers teddy ball frisbee skateboard surfboard skis racket bat glove shirt hat tie jacket white
black red blue green yellow brown large small big little tall young old wooden open empty full
sitting standing walking riding holding eating playing flying looking laying lying parked
carrying wearing waiting watching cutting throwing catching jumping swimming grazing covered
filled topped is are it its his her their each other up down out into through along around while
that this there together very dirt tennis baseball game court living desk pole track station
stop fence zoo farm area view close shot picture photo background piece slice meal dish counter
shelf tray
"""


def write_tiny_bert_vocab(path: str | Path) -> list[str]:
    """vocab.txt for GIT's BERT tokenizer: BERT's special tokens, ``CAPTION_WORDS``, then the words
    of the synthetic dataset's captions (which the demo's trained GIT learns to say)."""
    from fmri_recon.data.synthetic import SOURCES

    words = [*CAPTION_WORDS.split(), *" ".join(f"a close up of {coco} {git}" for _, coco, git in SOURCES).split()]
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    Path(path).write_text("\n".join(tokens) + "\n")
    return tokens


def build_tiny_git(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny random ``GitForCausalLM`` + ``GitProcessor`` folder (layout in the module docstring).

    Vision tower: 32x32 images, patch 8 -> 17 tokens of width 32 (git-large-coco: 224/14 -> 257
    tokens of 1024). Special tokens get a large negative output bias, so greedy decoding of the
    random model never stops early nor emits [UNK]: a caption is always max_length-1 words.
    """
    import torch
    from transformers import BertTokenizer, CLIPImageProcessor, GitConfig, GitForCausalLM, GitProcessor

    with helpers.atomic_dir(out_dir) as tmp, _seeded(seed):
        src = tmp / "vocab"
        src.mkdir()
        tokens = write_tiny_bert_vocab(src / "vocab.txt")
        tokenizer = BertTokenizer.from_pretrained(src, model_max_length=64)
        image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        config = GitConfig(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=8),
            vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64,
            initializer_range=0.2,      # at BERT's 0.02 a random GIT ignores its image: one caption for all
            pad_token_id=tokens.index("[PAD]"), bos_token_id=tokens.index("[CLS]"),
            eos_token_id=tokens.index("[SEP]"))
        model = GitForCausalLM(config).eval()
        with torch.no_grad():
            model.output.bias[:5] = -1e4
        model.save_pretrained(tmp)
        GitProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)
        shutil.rmtree(src)
    return Path(out_dir)
