"""Rule train_decoder: a tiny unCLIP decoder, GIT or SD-XL trained on the run's train images (the demo)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
import tempfile
from pathlib import Path

import torch

from fmri_recon import runlog
from fmri_recon.data import nsd, synthetic
from fmri_recon.decode import tiny_decoders, tiny_vae, weights
from fmri_recon.targets.clip_targets import TargetCache

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p, kind, out = snakemake.input, snakemake.params, snakemake.wildcards.kind, snakemake.output[0]
cfg = json.loads(p.settings)
test = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test).test_images
ids = tiny_vae.train_ids(nsd.images_of_runs(p.data_dir, p.runs, p.new_test), test)
images = torch.from_numpy(nsd.read_images(p.data_dir, ids)).float()
common = dict(batch_size=cfg["batch_size"], lr=cfg["lr"], seed=cfg["seed"])
with tempfile.TemporaryDirectory(dir=Path(out).parent) as scratch:
    init = Path(scratch) / "random"              # what random_model writes, with the training's seed
    if kind == "unclip":
        weights.build_tiny_unclip(init, context_dim=p.context_dim, seq_len=p.seq_len, seed=cfg["seed"],
                                  vae_params=tiny_decoders.TRAINED_VAE, image_size=tiny_decoders.TRAINED_IMAGE_SIZE,
                                  coord_channels=2 if cfg["positional"] else 0)
        tokens = torch.from_numpy(TargetCache(inp.targets).get(ids)).float()
        report = tiny_decoders.train_unclip(init, out, images, tokens, ids, vae_steps=cfg["vae_steps"],
                                               unet_steps=cfg["unclip_steps"], drop_rate=cfg["drop_rate"], **common)
    elif kind == "git":
        weights.build_tiny_git(init, seed=cfg["seed"])
        report = tiny_decoders.train_git(init, out, images, synthetic.read_captions(p.data_dir, ids), ids,
                                            steps=cfg["git_steps"], **common)
    else:
        weights.build_tiny_sdxl_img2img(init, seed=cfg["seed"])
        report = tiny_decoders.train_sdxl(init, Path(inp.unclip) / "vae", out, images,
                                             synthetic.read_captions(p.data_dir, ids), ids, size=p.refine_size,
                                             steps=cfg["sdxl_steps"], drop_rate=cfg["drop_rate"], **common)
log.info("trained %s on %d images: %s", kind, len(ids), {k: v for k, v in report.items() if k != "train_image_ids"})
