"""The synthetic dataset as NSD's own release, for the runs that rebuild it (preprocess.source: raw).

``write_release`` writes the same dataset twice: as the bucket holds NSD (the raw layout, served by
bucket_server.FakeBucket) and directly in the pscotti/mindeyev2 layout, which the rebuilt files
must equal. The files NSD's release does not have (COCO captions, region masks) are put in the
run's data_dir, as a user copies them from the dataset repo.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from fmri_recon.data import nsd, synthetic, synthetic_raw

NOT_IN_NSD = (nsd.EVAL_CAPTIONS, nsd.EVAL_GIT_CAPTIONS, nsd.MASKS_FILE, synthetic.CAPTIONS_FILE)


def write_release(settings: dict, bucket: Path, direct: Path, data_dir: Path | None = None,
                  resize: tuple[str, bool] = ("bilinear", True)) -> list[str]:
    """Raw layout under ``bucket``, the direct layout under ``direct``; returns the bucket keys."""
    cfg = synthetic.SyntheticConfig(**settings)
    if not (direct / nsd.IMAGES_FILE).exists():
        synthetic.write_dataset(cfg, direct, resize)
    keys = synthetic_raw.write_raw(cfg, bucket, resize)
    for rel in NOT_IN_NSD if data_dir is not None else ():
        if not (data_dir / rel).exists():                   # a finished run's copies stay as they are
            (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(direct / rel, data_dir / rel)
    return keys
