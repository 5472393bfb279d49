"""Rule snapshot_weights: the files of a hub model repository a stage needs (GIT, SD-XL)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import runlog
from fmri_recon.decode import weights

log = runlog.setup(snakemake.log[0])
repo = snakemake.params.repo_id
if snakemake.params.configs_only:            # beside a single-file checkpoint
    patterns = weights.SDXL_CONFIG_PATTERNS
else:
    patterns = {weights.GIT_LARGE_COCO: weights.GIT_PATTERNS, weights.SDXL_BASE: weights.SDXL_BASE_PATTERNS}.get(
        repo, weights.SDXL_BASE_PATTERNS)
path = weights.snapshot(repo, snakemake.output[0], patterns)
log.info("snapshot of %s -> %s", repo, path)
