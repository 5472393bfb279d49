"""What rebuilding one NSD subject costs on this machine, at NSD's real sizes (subject 1's 1.8 mm
grid, 750 trials per session, 15724 nsdgeneral voxels), with scratch files (no NSD access here):

* reading one session's masked betas from the NIfTI (.nii.gz, loaded whole: the format has no
  partial reads) and from NSD's HDF5 layout ((750, Z, Y, X), chunks of one voxel's 750 trials),
  A B A B, medians;
* the per-voxel z-score of 40 sessions (30000 x 15724 float32).

    python bench/bench_preprocess.py [--repeats 2] [--sessions 40]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

GRID = (81, 104, 83)          # subject 1, 1.8 mm (NSD manual, Technical notes)
TRIALS, VOXELS = 750, 15724


def scratch_session(folder: Path, rng) -> tuple[Path, Path, np.ndarray]:
    """One session's betas as NSD ships them (int16, zero outside a brain mask) and an ROI mask."""
    import nibabel as nib

    size = int(np.prod(GRID))
    brain = np.zeros(size, bool)
    brain[rng.choice(size, 4 * VOXELS, replace=False)] = True
    roi = np.zeros(size, bool)
    roi[rng.choice(np.flatnonzero(brain), VOXELS, replace=False)] = True
    volume = np.zeros((size, TRIALS), np.int16)
    volume[brain] = rng.integers(-900, 900, (int(brain.sum()), TRIALS), dtype=np.int16)
    volume = volume.reshape(*GRID, TRIALS)
    nii = folder / "betas_session01.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.diag([1.8, 1.8, 1.8, 1.0])), str(nii))
    h5 = folder / "betas_session01.hdf5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("betas", data=volume.transpose(3, 2, 1, 0), chunks=(TRIALS, 1, 1, 1))
    return nii, h5, roi.reshape(GRID)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    from fmri_recon.data import preprocess, raw_nsd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=40)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        nii, h5, mask = scratch_session(Path(tmp), rng)
        print(f"scratch session written in {time.perf_counter() - start:.0f} s: .nii.gz {nii.stat().st_size / 1e6:.0f} MB, "
              f".hdf5 {h5.stat().st_size / 1e6:.0f} MB")
        assert np.array_equal(raw_nsd.read_betas(nii, mask), raw_nsd.read_betas(h5, mask))
        times = {"nii.gz": [], "hdf5": []}
        for _ in range(args.repeats):                                  # A B A B
            times["nii.gz"].append(timed(lambda: raw_nsd.read_betas(nii, mask)))
            times["hdf5"].append(timed(lambda: raw_nsd.read_betas(h5, mask)))
        for fmt, t in times.items():
            print(f"read one session ({fmt}): median {statistics.median(t):.1f} s over {len(t)} "
                  f"(x{args.sessions} sessions: {statistics.median(t) * args.sessions / 60:.1f} min)")
    betas = rng.standard_normal((TRIALS * args.sessions, VOXELS), dtype=np.float32)
    train = np.flatnonzero(rng.random(len(betas)) > 0.1)
    took = timed(lambda: preprocess.normalise(betas, train))
    print(f"z-score of {betas.shape} float32 ({betas.nbytes / 1e9:.2f} GB): {took:.1f} s")


if __name__ == "__main__":
    main()
