"""Benchmark of the decoding and evaluation stages on the demo's tiny models.

    python bench/bench_stages.py [--images 16]

Seconds per image of: unCLIP decoding (38 Euler steps, guidance 5), GIT captioning, SD-XL
img2img refinement (25 steps from 0.48 strength), and each evaluation metric (random-init
networks of the real classes, as in the demo). Builds its tiny models in a temporary folder.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    n = args.images
    from fmri_recon.decode import refine, weights
    from fmri_recon.evaluate import score
    from fmri_recon.configuration import defaults
    from fmri_recon.decode.captions import GitCaptioner
    from fmri_recon.evaluate.metrics import brain, captions, feature_nets, image
    from fmri_recon.decode.unclip import UnclipDecoder

    g = torch.Generator().manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights.build_tiny_unclip(tmp / "unclip", context_dim=64, seq_len=256)
        weights.build_tiny_git(tmp / "git")
        weights.build_tiny_sdxl_img2img(tmp / "sdxl")
        dec = UnclipDecoder.from_pretrained(tmp / "unclip")
        tokens = torch.randn(n, 256, 64, generator=g)
        rows["reconstruct: unCLIP decode"] = timed(
            lambda: dec.decode(tokens, generator=g, num_steps=38, guidance=5.0, batch_size=n), n)
        git = GitCaptioner.from_pretrained(tmp / "git")
        feats = torch.randn(n, *git.feature_shape, generator=g)
        rows["reconstruct: GIT caption"] = timed(lambda: git.caption(feats, max_length=defaults("captions")["max_length"]), n)
        imgs = torch.rand(n, 3, 256, 256, generator=g)
        pipe = refine.load_pipeline(tmp / "sdxl")
        rows["refine: SD-XL img2img (128 px)"] = timed(
            lambda: refine.refine(pipe, imgs, ["a photo"] * n, steps=defaults("refine")["steps"],
                                  guidance=defaults("refine")["guidance"], size=128, seed=0, batch_size=n), n)
    gt, rec = torch.rand(n, 3, 256, 256, generator=g), torch.rand(n, 3, 256, 256, generator=g)
    rows["evaluate: pixcorr"] = timed(lambda: image.pixcorr(gt, rec), n)
    rows["evaluate: ssim"] = timed(lambda: image.ssim(gt, rec), n)
    models = score.feature_models("random", clip_arch="tiny-ViT-B-32")
    for name in score.NETS:   # features of the ground truth and of the reconstructions
        rows[f"evaluate: {name} features (random init)"] = timed(
            lambda: [feature_nets.extract(name, models[name], x) for x in (gt, rec)], n)
    gnet = brain.GNet8Encoder(subjects={1: 600})
    rows["evaluate: GNet8 brain prediction"] = timed(lambda: brain.predict_voxels(gnet, rec, 1), n)
    sent = captions.load_sentence_model()
    words = ["a cat sitting on a wooden floor"] * n
    rows["evaluate: caption metrics (METEOR, ROUGE, MiniLM)"] = timed(
        lambda: captions.caption_metrics(words, words, sentence_model=sent), n)
    print(f"torch threads {torch.get_num_threads()}, {n} images")
    for k, v in rows.items():
        print(f"{k:55s} {v:8.4f} s/image")


if __name__ == "__main__":
    main()
