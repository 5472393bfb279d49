"""Benchmark of the blurry branch's frozen models: seconds per image of each step.

    python bench/bench_lowlevel.py                  # tiny demo models
    python bench/bench_lowlevel.py --real --n 4     # real-size SD VAE and ConvNeXt-XL (random weights)

Steps: VAE encode and ConvNeXt teacher (the lowlevel_targets cache, once per image), kornia
augmentations + teacher (every training step), VAE decode (the blurry stage). Random weights:
the cost does not depend on the values.
"""
from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeats: int = 3) -> float:
    fn()                                    # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    from fmri_recon.targets import lowlevel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", action="store_true", help="real-size models instead of the demo's tiny ones")
    ap.add_argument("--n", type=int, default=16, help="images per batch")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    tiny = not args.real
    vae = lowlevel.build_vae(tiny).to(args.device).eval().requires_grad_(False)
    teacher = lowlevel.build_teacher(tiny).to(args.device).eval().requires_grad_(False)
    augs = lowlevel.blur_augs()
    images = torch.rand(args.n, 3, 224, 224, device=args.device)
    with torch.no_grad():
        latents = lowlevel.encode_latents(vae, images)
        steps = {
            "VAE encode (cache)": lambda: lowlevel.encode_latents(vae, images),
            "teacher (cache)": lambda: teacher(lowlevel.normalise(images)),
            "augs + teacher (each train step)": lambda: teacher(lowlevel.normalise(augs(images))),
            "VAE decode (blurry stage)": lambda: lowlevel.decode_latents(vae, latents),
        }
        print(f"{'real-size' if args.real else 'tiny'} models on {args.device}, batch {args.n}:")
        for name, fn in steps.items():
            print(f"  {name:34s} {timed(fn) / args.n:.4f} s/image")


if __name__ == "__main__":
    main()
