"""Benchmark of the data layer: reader throughput and CLIP-targets encoding throughput.

    python bench/bench_data.py --data-dir demo/data [--archs tiny-ViT-bigG-14 ViT-B-32]

Reader: tars + betas rows + images by sorted unique index, as training reads them.
Targets: preprocessing + encoding with random weights of each architecture (real-size
architectures too: the cost of a forward pass does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_reader(data_dir: Path, subject: int, sessions: int, repeats: int = 3) -> dict:
    from fmri_recon.data import nsd

    best = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        split = nsd.open_split(data_dir, subject, sessions)
        t1 = time.perf_counter()
        vox = nsd.read_voxels(data_dir, subject, split.train_trials)
        t2 = time.perf_counter()
        imgs = nsd.read_images(data_dir, split.train_images)
        t3 = time.perf_counter()
        n = len(vox)
        for key, value in {"tars (samples/s)": n / (t1 - t0), "betas (samples/s)": n / (t2 - t1),
                           "images (samples/s)": len(imgs) / (t3 - t2),
                           "all (samples/s)": n / (t3 - t0)}.items():
            best[key] = max(best.get(key, 0), value)
    best["samples"] = n
    return best


def bench_targets(data_dir: Path, arch: str, n_images: int, batch_size: int) -> float:
    from fmri_recon.targets import clip_targets
    from fmri_recon.configuration import defaults

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "w.safetensors"
        clip_targets.save_random_clip(arch, weights)
        visual = clip_targets.load_vision(arch, weights, "cpu", __import__("torch").float32)
        s, e = visual.forward_intermediates(__import__("torch").zeros(1, 3, 224, 224), indices=1, output_fmt="NLC",
                                            intermediates_only=True)["image_intermediates"][-1].shape[1:]
        del visual
        t0 = time.perf_counter()
        clip_targets.build_cache(np.arange(n_images), data_dir, weights, Path(tmp) / "t.hdf5",
                                 {"arch": arch, "seq_dim": s, "emb_dim": e}, {**defaults("targets"), "batch_size": batch_size, "device": "cpu"})
        return n_images / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=Path("demo/data"))
    ap.add_argument("--subject", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=1)
    ap.add_argument("--archs", nargs="+", default=["tiny-ViT-bigG-14", "tiny-ViT-B-32", "ViT-B-32"])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}")
    for key, value in bench_reader(args.data_dir, args.subject, args.sessions).items():
        print(f"reader {key:20s} {value:10.1f}")
    for arch in args.archs:
        rate = bench_targets(args.data_dir, arch, args.images, args.batch_size)
        print(f"targets {arch:19s} {rate:10.1f} images/s (CPU, fp32, batch {args.batch_size})")


if __name__ == "__main__":
    main()
