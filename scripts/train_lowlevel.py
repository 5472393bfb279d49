"""Rule train_lowlevel: the blurry branch's tiny VAE trained on the run's train images (the demo)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import torch

from fmri_recon import runlog
from fmri_recon.data import nsd
from fmri_recon.decode import tiny_vae
from fmri_recon.targets import lowlevel

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p, cfg = snakemake.params, json.loads(snakemake.params.settings)
test = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test).test_images
ids = tiny_vae.train_ids(nsd.images_of_runs(p.data_dir, p.runs, p.new_test), test)
images = torch.from_numpy(nsd.read_images(p.data_dir, ids)).float()
torch.manual_seed(cfg["seed"])
report = tiny_vae.train_lowlevel_vae(lowlevel.build_vae(tiny=True), images, ids, snakemake.output.vae,
                                             steps=cfg["lowlevel_steps"], batch_size=cfg["batch_size"], lr=cfg["lr"],
                                             seed=cfg["seed"])
log.info("trained the low-level VAE on %d images: %s", len(ids), report["vae"])
