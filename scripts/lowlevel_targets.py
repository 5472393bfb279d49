"""Rule lowlevel_targets: VAE latents and teacher features of every image of the blurry experiments."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.targets import lowlevel

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, inp = snakemake.params, snakemake.input
settings = json.loads(p.settings)
device, dtype = helpers.resolve_device(p.device, settings["precision"])
ids = nsd.images_of_runs(p.data_dir, p.runs, p.new_test)
info = lowlevel.build_cache(ids, p.data_dir, inp.vae, inp.teacher, snakemake.output[0],
                            tiny_vae=p.tiny_vae, tiny_teacher=p.tiny_teacher,
                            device=device, dtype=dtype, batch_size=p.batch_size)
log.info("cached low-level targets: %s", info)
