"""Rule git_features: GIT's own visual features of every image (the target space of caption converters)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.targets import clip_targets
from fmri_recon.decode.captions import GitCaptioner

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
device, dtype = helpers.resolve_device(p.device)
git = GitCaptioner.from_pretrained(snakemake.input.git, device=device, dtype=dtype)
ids = nsd.images_of_runs(p.data_dir, p.runs, p.new_test)
n = clip_targets.write_cache(ids, p.data_dir, snakemake.output[0],
                             lambda x: {"tokens": git.image_features(x.to(device))}, {"tokens": git.feature_shape},
                             {"model": "GIT image encoder", "weights": snakemake.input.git},
                             batch_size=32, desc="GIT features")
log.info("GIT features of %d images %s", n, git.feature_shape)
