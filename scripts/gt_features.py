"""Rule gt_features: the ground-truth test images' features for every network metric, once per run."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import torch
from safetensors.torch import save_file

from fmri_recon import helpers, runlog
from fmri_recon.evaluate import score

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
device = helpers.resolve_device(snakemake.params.device)[0]
models = score.metric_models(json.loads(snakemake.params.settings), snakemake.input, device)
gt = score.load_pt(snakemake.input.gt_images).float()
features = score.ground_truth_features(gt, models, device, json.loads(snakemake.params.settings)["batch_size"])
with helpers.atomic_output(snakemake.output[0]) as tmp:
    save_file({k: v.contiguous() for k, v in features.items()}, str(tmp))
log.info("features of %d images: %s", len(gt), {k: tuple(v.shape) for k, v in features.items()})
