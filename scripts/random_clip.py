"""Rule random_clip: a randomly initialised open_clip model, saved like a hub checkpoint."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import runlog
from fmri_recon.targets import clip_targets

log = runlog.setup(snakemake.log[0])
clip_targets.save_random_clip(snakemake.params.arch, snakemake.output[0], seed=snakemake.params.seed)
log.info("random %s (seed %d) -> %s", snakemake.params.arch, snakemake.params.seed, snakemake.output[0])
