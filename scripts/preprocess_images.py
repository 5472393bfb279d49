"""Rule preprocess_images: the images file from NSD's nsd_stimuli.hdf5 (imgBrick), resized."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import helpers, runlog
from fmri_recon.data import preprocess

log = runlog.setup(snakemake.log[0])
settings = json.loads(snakemake.params.settings)
origin = preprocess.provenance({"stimuli": snakemake.input.stimuli}, settings)
n = preprocess.write_images(snakemake.input.stimuli, snakemake.output.images, settings, origin)
helpers.write_json(snakemake.output.provenance, {**origin, "made": {"images": n}})
log.info("%d images resized (%s, antialias %s)", n, settings["image_resize"], settings["image_antialias"])
