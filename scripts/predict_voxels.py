"""Rule predict_voxels: the new volumes -> masked, z-scored voxels grouped by image."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import runlog
from fmri_recon.predict import voxels

log = runlog.setup(snakemake.log[0])
p = snakemake.params
made = voxels.prepare(json.loads(p.settings), snakemake.output[0], zscore=p.zscore,
                      zscore_file=snakemake.input.get("zscore"), average_repeats=p.average_repeats)
log.info("prepared for predict: %s", made)
