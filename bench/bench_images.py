"""The blurry branch's train images: held in memory (the path before issue 15) or read from the
images file every step (ImagesOnDisk, what training does now). Memory held and steps/s, A B A B.

    python bench/bench_images.py                       # 2000 images in a scratch HDF5 file
    python bench/bench_images.py --data-dir demo/data  # an existing NSD-format images file

Each step reads the 24 images of one global batch (random, as epoch_batches draws them). The
scratch file is chunked one image per chunk; NSD's own file may be chunked otherwise.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scratch_images(folder: Path, n: int) -> Path:
    from fmri_recon.data import nsd

    rng = np.random.default_rng(0)
    with h5py.File(folder / nsd.IMAGES_FILE, "w") as f:
        ds = f.create_dataset("images", (n, 3, 224, 224), dtype=np.float16, chunks=(1, 3, 224, 224))
        for i in range(0, n, 256):
            ds[i:i + 256] = rng.random((min(256, n - i), 3, 224, 224), dtype=np.float32).astype(np.float16)
    return folder


def steps_per_s(images, ids: np.ndarray, steps: int, batch: int, rng) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        out = images(rng.choice(ids, batch, replace=False))
        assert out.shape == (batch, 3, 224, 224)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    from fmri_recon.data import nsd
    from fmri_recon.train.dataset import ImagesInMemory, ImagesOnDisk

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else scratch_images(Path(tmp), args.images)
        n = nsd.h5_dataset_info(data_dir / nsd.IMAGES_FILE, "images", 4)[0][0]
        ids = np.arange(n)
        before = rss_mb()
        disk = ImagesOnDisk(data_dir)
        after_disk = rss_mb()
        memory = ImagesInMemory(ids, torch.from_numpy(nsd.read_images(data_dir, ids)))   # as load_lowlevel did
        after_memory = rss_mb()
        rng = np.random.default_rng(0)
        rates = {"memory": [], "disk": []}
        for _ in range(args.rounds):
            for name, images in (("memory", memory), ("disk", disk)):
                rates[name].append(steps_per_s(images, ids, args.steps, args.batch, rng))
    print(f"{n} images ({n * 3 * 224 * 224 * 2 / 2**20:.0f} MB in fp16), batch {args.batch}")
    print(f"memory held: on disk {after_disk - before:.0f} MB, in memory {after_memory - after_disk:.0f} MB "
          f"(73k images: {73000 * 3 * 224 * 224 * 2 / 2**30:.1f} GiB)")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name}: {med:.1f} steps/s ({1000 / med:.1f} ms a step; runs {', '.join(f'{x:.1f}' for x in r)})")


if __name__ == "__main__":
    main()
