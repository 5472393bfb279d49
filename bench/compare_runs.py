"""Compare two runs of the workflow file by file: are their results the same, wall times aside?

    python bench/compare_runs.py RUN_A RUN_B

Files equal byte for byte are counted. For the others: checkpoints and tensors (.pt, .pth) are
compared value by value with timing keys dropped, CSV tables column by column with the cost and
wall-time columns dropped, JSON files key by key without timings or build folders, webdataset
tars member by member (their headers hold mtimes); anything else is listed as different. Logs, benchmarks and Snakemake's own metadata are left out: they hold times and paths.
Used to check that a refactor leaves the demo's results unchanged.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

SKIP_DIRS = {"logs", "benchmarks", ".snakemake", "__pycache__"}


def timing(key: str) -> bool:
    """A key that holds a time, a cost, or (diffusers' ``_name_or_path``) the temporary folder a model was built in."""
    return key == "_name_or_path" or any(w in key for w in ("wall", "elapsed", "time", "cost_", "peak", "rss",
                                                               "gpu_hours", "seconds"))


def files(run: Path) -> dict[str, Path]:
    return {str(p.relative_to(run)): p for p in run.rglob("*")
            if p.is_file() and not SKIP_DIRS & set(p.relative_to(run).parts)}


def same_values(a, b) -> bool:
    import numpy as np
    import torch

    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in a.keys() | b.keys() if not timing(str(k))}
        return all(k in a and k in b and same_values(a[k], b[k]) for k in keys)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_values(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and np.array_equal(a, b)
    return a == b


def same_csv(a: Path, b: Path) -> bool:
    def rows(p):
        with open(p, newline="") as f:
            return [{k: v for k, v in r.items() if not timing(k)} for r in csv.DictReader(f)]
    return rows(a) == rows(b)


def same_tar(a: Path, b: Path) -> bool:
    """Same members with the same contents (a tar header also holds each member's mtime)."""
    import tarfile

    with tarfile.open(a) as ta, tarfile.open(b) as tb:
        ma, mb = ta.getmembers(), tb.getmembers()
        return [m.name for m in ma] == [m.name for m in mb] and all(
            (x.isfile() and ta.extractfile(x).read()) == (y.isfile() and tb.extractfile(y).read()) for x, y in zip(ma, mb))


def compare(a: Path, b: Path) -> bool:
    import torch

    if a.suffix in (".pt", ".pth"):
        load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731 (our own files)
        return same_values(load(a), load(b))
    if a.suffix == ".csv":
        return same_csv(a, b)
    if a.suffix == ".tar":
        return same_tar(a, b)
    if a.suffix == ".json":
        return same_values(json.loads(a.read_text()), json.loads(b.read_text()))
    return False


def main(run_a: str, run_b: str) -> int:
    fa, fb = files(Path(run_a)), files(Path(run_b))
    only = sorted(fa.keys() ^ fb.keys())
    equal, same, different = 0, [], []
    for rel in sorted(fa.keys() & fb.keys()):
        if fa[rel].read_bytes() == fb[rel].read_bytes():
            equal += 1
        elif compare(fa[rel], fb[rel]):
            same.append(rel)
        else:
            different.append(rel)
    print(f"{equal} files byte-identical; {len(same)} equal but for timings; {len(different)} different; "
          f"{len(only)} in one run only")
    for title, names in (("equal but for timings", same), ("different", different), ("in one run only", only)):
        if names:
            print(f"{title}:\n  " + "\n  ".join(names))
    return 1 if different or only else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
