"""What preparing a lab's own scans (rule prepare_own) costs per session and per image, at NSD's
sizes (subject 1's 1.8 mm grid, 750 trials, 15724 voxels; bench_preprocess.py's scratch session):

* one session's masked volumes read and checked (NaN, blank volumes) by own_input, side by side
  with the raw-NSD reader of the same file (raw_nsd.read_betas), A B A B, medians: the own path
  should cost no more. For the HDF5 layout, own_input reads the whole dataset and raw_nsd only the
  mask's bounding box;
* one 425 px stimulus (NSD's size) loaded, cropped and resized to 224 px.

    python bench/bench_own.py [--repeats 2] [--images 50]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocess import scratch_session, timed  # noqa: E402  (the same scratch session)


def own_read(path: Path, mask: np.ndarray) -> np.ndarray:
    from fmri_recon.data import own_input

    rows = own_input.read_volumes(path, mask, "TZYX", "betas")
    own_input.check_volumes(path, rows)
    return rows


def images(folder: Path, n: int, rng) -> float:
    """Seconds per stimulus: a 425 px PNG loaded, cropped and resized by own_input.load_image."""
    from PIL import Image

    from fmri_recon.data import own_input

    paths = []
    for i in range(n):
        paths.append(folder / f"img_{i}.png")
        Image.fromarray(rng.integers(0, 255, (425, 425, 3), dtype=np.uint8)).save(paths[-1])
    took = timed(lambda: [own_input.load_image(p, 224, "bilinear", True) for p in paths])
    return took / n


def main() -> None:
    from fmri_recon.data import raw_nsd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--images", type=int, default=50)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        nii, h5, mask = scratch_session(Path(tmp), rng)
        assert np.array_equal(own_read(nii, mask), raw_nsd.read_betas(nii, mask))
        assert np.array_equal(own_read(h5, mask), raw_nsd.read_betas(h5, mask))
        times = {k: [] for k in ("own nii.gz", "raw_nsd nii.gz", "own hdf5", "raw_nsd hdf5")}
        for _ in range(args.repeats):                                   # A B A B
            times["own nii.gz"].append(timed(lambda: own_read(nii, mask)))
            times["raw_nsd nii.gz"].append(timed(lambda: raw_nsd.read_betas(nii, mask)))
            times["own hdf5"].append(timed(lambda: own_read(h5, mask)))
            times["raw_nsd hdf5"].append(timed(lambda: raw_nsd.read_betas(h5, mask)))
        for name, t in times.items():
            print(f"read one session ({name}): median {statistics.median(t):.1f} s over {len(t)}")
        per_image = images(Path(tmp), args.images, rng)
    print(f"one 425 px stimulus to 224 px: {per_image * 1e3:.0f} ms (10000 images: {per_image * 1e4 / 60:.1f} min)")


if __name__ == "__main__":
    main()
