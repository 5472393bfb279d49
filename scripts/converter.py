"""Rule converter: regress one embedding space onto another over the same images."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import numpy as np

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.decode import converter
from fmri_recon.targets.clip_targets import TargetCache

log = runlog.setup(snakemake.log[0])
p = snakemake.params
settings = json.loads(p.settings)
source, target = TargetCache(snakemake.input.source), TargetCache(snakemake.input.target)
ids = np.intersect1d(source.image_ids, target.image_ids)
test = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test).test_images
held_out = np.isin(ids, test)        # report on ground-truth test images the converter never saw
model, report = converter.fit(source.get(ids), target.get(ids), held_out, epochs=settings["epochs"], lr=settings["lr"],
                              batch_size=settings["batch_size"])
report.update(source=snakemake.input.source, target=snakemake.input.target, images=int(len(ids)))
converter.save(model, snakemake.output.model, report)
helpers.write_json(snakemake.output.report, report)
log.info("converter quality: %s", report)
