"""The GPU check: the real-size models with random weights on one CUDA device, timed, with peak memory.

    python bench/gpu_check.py                  # on a CUDA machine: the table, in a few minutes
    python bench/gpu_check.py --smoke          # tiny sizes on the CPU: checks that the script runs

Rows (seconds per sample or image, peak GPU memory allocated by torch):

- the training step of the lite model (hidden 1024, bigG 256x1664) and of the seed model (hidden
  1024, ViT-B-32 49x768) at the config's batch (24), in the default regime (fp32 weights, bf16
  autocast, activation checkpointing) and the other one (DeepSpeed ZeRO-2, CPU optimizer offload);
- the unCLIP decode of 8 images at 768 px (unclip6's UNet and SD-XL's VAE, 38 Euler steps,
  guidance 5, the config's decoder.batch_size, fp16);
- the SD-XL img2img refinement of 4 images (SD-XL base architecture, 25 steps from 0.48, fp16);
- the evaluation of 50 images (every image metric's network at its real size, GNet8).

Random weights cost the same as trained ones. It goes through the stages' own code (runtime.build_model,
loop.prepare, loop.train_epoch, UnclipDecoder.decode, refine.refine, score.score_images). The
tests never need it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VOXELS = 15724
MODELS = {"lite": dict(hidden_dim=1024, clip_seq_dim=256, clip_emb_dim=1664, prior_dim_head=52),
          "seed": dict(hidden_dim=1024, clip_seq_dim=49, clip_emb_dim=768, prior_dim_head=52)}
TINY = dict(hidden_dim=32, clip_seq_dim=16, clip_emb_dim=32, prior_dim_head=16, prior_depth=1)


def device_and_peak(smoke: bool):
    import torch

    if smoke:
        return "cpu", lambda: float("nan")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --smoke to check the script on a CPU)")
    torch.cuda.reset_peak_memory_stats()
    return "cuda", lambda: torch.cuda.max_memory_allocated() / 2**30


def train_step(model_name: str, regime: str, batch: int, steps: int, smoke: bool) -> dict:
    """Seconds per sample of the training step (after one warm-up step) and peak memory."""
    import numpy as np
    import torch

    from fmri_recon.train import loop, runtime
    from fmri_recon.models import BrainConfig
    from fmri_recon.train.dataset import SubjectData, TrainData

    device, peak = device_and_peak(smoke)
    shape = TINY if smoke else MODELS[model_name]
    voxels = 100 if smoke else VOXELS
    n = batch * (steps + 1)
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(n + 2, shape["clip_seq_dim"], shape["clip_emb_dim"], generator=g).half()
    subj = SubjectData(1, torch.randn(n, voxels, generator=g).half(), torch.arange(2, n + 2), np.arange(2, n + 2),
                       torch.randn(2, 3, voxels, generator=g).half(), torch.arange(2), np.arange(2))
    data = TrainData([subj], targets, np.arange(n + 2))
    cfg = BrainConfig(num_voxels=[voxels], n_blocks=4, clip_exclude_mean=True, **shape)
    tc = loop.TrainConfig(num_epochs=20, batch_size=batch, precision="bf16", device=device, mixup_pct=0.0,
                           deepspeed_offload=regime == "deepspeed", activation_checkpointing=True)
    model = runtime.build_model(data, cfg, tc, init_from=None, resuming=False)
    parts = loop.prepare(model, tc, steps + 1, None, Path("unused"))
    warm = TrainData([SubjectData(1, subj.voxels[:batch], subj.target_index[:batch], subj.image_ids[:batch],
                                  subj.test_voxels, subj.test_index, subj.test_images)], targets, data.image_ids)
    loop.train_epoch(warm, tc, 0, parts, mixup=False, temp=0.006, teacher_aug=None)
    sync(device)
    t0 = time.perf_counter()
    rest = TrainData([SubjectData(1, subj.voxels[batch:], subj.target_index[batch:], subj.image_ids[batch:],
                                  subj.test_voxels, subj.test_index, subj.test_images)], targets, data.image_ids)
    loop.train_epoch(rest, tc, 1, parts, mixup=False, temp=0.006, teacher_aug=None)
    sync(device)
    return {"s_per_item": (time.perf_counter() - t0) / (batch * steps), "peak_gb": peak()}


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def unclip_decode(n: int, batch: int, smoke: bool) -> dict:
    import torch

    from fmri_recon.decode import weights
    from fmri_recon.decode.unclip import UnclipDecoder

    device, peak = device_and_peak(smoke)
    with tempfile.TemporaryDirectory() as tmp:
        if smoke:
            weights.build_tiny_unclip(Path(tmp) / "d", context_dim=32, seq_len=16)
        else:
            build_real_unclip(Path(tmp) / "d")
        dtype = torch.float32 if smoke else torch.float16
        decoder = UnclipDecoder.from_pretrained(Path(tmp) / "d", device=device, dtype=dtype)
    tokens = torch.randn(n, *decoder.token_shape)
    t0 = time.perf_counter()
    decoder.decode(tokens, generator=torch.Generator().manual_seed(0), num_steps=2 if smoke else 38, guidance=5.0,
                   batch_size=batch)
    sync(device)
    return {"s_per_item": (time.perf_counter() - t0) / n, "peak_gb": peak()}


def build_real_unclip(out: Path) -> None:
    """unclip6's UNet and SD-XL's VAE at their real sizes, random, saved as the decoder folder."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from fmri_recon.decode import weights

    with torch.device("cuda"):
        unet = UNet2DConditionModel(**weights.unet_config(weights.UNCLIP6_UNET, weights.UNCLIP_IMAGE_SIZE // 8))
        vae = AutoencoderKL(**weights.vae_config(weights.SDXL_VAE, weights.UNCLIP_IMAGE_SIZE))
    out.mkdir(parents=True)
    unet.half().save_pretrained(out / "unet")
    vae.save_pretrained(out / "vae")
    weights.upstream_scheduler().save_pretrained(out / "scheduler")
    weights._write_decoder_json(out, weights.UNCLIP6_UNET["context_dim"], weights.UNCLIP_SEQ_LEN,
                                weights.UNCLIP_IMAGE_SIZE)


def build_real_sdxl(out: Path) -> None:
    """The SD-XL base architecture (UNet, VAE, CLIP-L and bigG text encoders), random, as a pipeline folder."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from fmri_recon.decode import weights

    tok = weights.write_clip_tokenizer(out / "_tok")
    tok2 = weights.write_clip_tokenizer(out / "_tok2", pad_token="!")
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, max_position_embeddings=77)
    sdxl_unet = dict(weights.UNCLIP6_UNET, context_dim=2048, adm_in_channels=2816)
    with torch.device("cuda"):
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, hidden_act="quick_gelu", **ids))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                                         num_attention_heads=20, projection_dim=1280, hidden_act="gelu",
                                                         **ids))
        unet = UNet2DConditionModel(**weights.unet_config(sdxl_unet, 128))
        vae = AutoencoderKL(**weights.vae_config(weights.SDXL_VAE, 1024))
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=te.half(), text_encoder_2=te2.half(), tokenizer=tok,
                                            tokenizer_2=tok2, unet=unet.half(), scheduler=weights.upstream_scheduler(),
                                            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
                                            add_watermarker=False)
    pipe.save_pretrained(out / "pipe")


def refinement(n: int, batch: int, smoke: bool) -> dict:
    import torch

    from fmri_recon.decode import refine, weights
    from fmri_recon.configuration import defaults

    device, peak = device_and_peak(smoke)
    with tempfile.TemporaryDirectory() as tmp:
        if smoke:
            folder = weights.build_tiny_sdxl_img2img(Path(tmp) / "pipe")
        else:
            build_real_sdxl(Path(tmp))
            folder = Path(tmp) / "pipe"
        dtype = torch.float32 if smoke else torch.float16
        pipe = refine.load_pipeline(folder, device=device, dtype=dtype)
    images = torch.rand(n, 3, 256, 256)
    t0 = time.perf_counter()
    settings = defaults("refine")
    refine.refine(pipe, images, ["a photo of a dog on the grass"] * n, steps=settings["steps"],
                  guidance=settings["guidance"], size=64 if smoke else settings["size"], seed=0, batch_size=batch)
    sync(device)
    return {"s_per_item": (time.perf_counter() - t0) / n, "peak_gb": peak()}


def evaluation(n: int, batch: int, smoke: bool) -> dict:
    import torch

    from fmri_recon.evaluate import score
    from fmri_recon.evaluate.metrics import brain

    device, peak = device_and_peak(smoke)
    models = score.feature_models("random", device, clip_arch="tiny-ViT-B-32" if smoke else "ViT-L-14-quickgelu")
    gnet = brain.GNet8Encoder(subjects={1: VOXELS}).to(device)
    masks = {r: torch.ones(VOXELS, dtype=torch.bool).numpy() for r in brain.REGIONS}
    g = torch.Generator().manual_seed(0)
    gt, rec = torch.rand(n, 3, 256, 256, generator=g), torch.rand(n, 3, 256, 256, generator=g)
    measured = torch.randn(n, VOXELS, generator=g).numpy()
    t0 = time.perf_counter()
    score.score_images({"recon": rec}, gt, models, gnet, 1, measured, masks, device, batch)
    sync(device)
    return {"s_per_item": (time.perf_counter() - t0) / n, "peak_gb": peak()}


def one(job: str, smoke: bool) -> dict:
    kind, *args = job.split(":")
    if kind == "train":
        return train_step(args[0], args[1], 2 if smoke else 24, 2 if smoke else 3, smoke)
    if kind == "decode":
        return unclip_decode(2 if smoke else 8, 2 if smoke else 4, smoke)
    if kind == "refine":
        return refinement(2 if smoke else 4, 2, smoke)
    return evaluation(4 if smoke else 50, 4 if smoke else 32, smoke)


JOBS = {"train:lite:autocast": "train step, lite (h 1024, bigG), fp32 weights + bf16 autocast, batch 24",
        "train:lite:deepspeed": "train step, lite, DeepSpeed ZeRO-2 offload bf16, batch 24",
        "train:seed:autocast": "train step, seed (h 1024, ViT-B-32), fp32 + bf16 autocast, batch 24",
        "train:seed:deepspeed": "train step, seed, DeepSpeed ZeRO-2 offload bf16, batch 24",
        "decode": "unCLIP decode, 8 images at 768 px, 38 steps, UNet batch 4 (x2 guidance), fp16",
        "refine": "SD-XL img2img refinement, 4 images at 768 px, 12 of 25 steps, fp16",
        "evaluate": "evaluation of 50 images: image metrics' networks + GNet8, batch 32"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", nargs="+", default=list(JOBS))
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args.smoke)), flush=True)
        return
    print("| stage | s per sample/image | peak GPU memory |\n|---|---|---|", flush=True)
    for job in args.jobs:           # each in its own process: clean peak memory, one DeepSpeed init each
        cmd = [sys.executable, __file__, "--one", job] + (["--smoke"] if args.smoke else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            print(f"| {JOBS[job]} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else '?'} | |",
                  flush=True)
            continue
        r = json.loads(lines[-1][len("RESULT "):])
        print(f"| {JOBS[job]} | {r['s_per_item']:.3f} | {r['peak_gb']:.1f} GB |", flush=True)


if __name__ == "__main__":
    main()
