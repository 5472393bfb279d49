"""Rule targets: encode every image of the run once with the configured CLIP model."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json


from fmri_recon import runlog
from fmri_recon.data import nsd
from fmri_recon.targets import clip_targets

log = runlog.setup(snakemake.log[0])
p = snakemake.params
ids = nsd.images_of_runs(p.data_dir, p.runs, p.new_test)
info = clip_targets.build_cache(ids, p.data_dir, snakemake.input.weights, snakemake.output[0],
                                json.loads(p.clip), json.loads(p.targets))
log.info("cached targets: %s", info)
