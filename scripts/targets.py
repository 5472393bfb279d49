"""Rule targets: encode every image of the run once with the configured CLIP model."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import numpy as np

from fmri_recon import clip_targets, nsd, runlog

log = runlog.setup(snakemake.log[0])
p = snakemake.params
ids = np.unique(np.concatenate([nsd.open_split(p.data_dir, s, n, p.new_test).all_images() for s, n in p.runs]))
info = clip_targets.build_cache(ids, p.data_dir, snakemake.input.weights, snakemake.output[0],
                                json.loads(p.clip), json.loads(p.targets))
log.info("cached targets: %s", info)
