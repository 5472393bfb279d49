"""Rule random_lowlevel: tiny random VAE and ConvNeXt teacher in upstream's file formats."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from pathlib import Path

from fmri_recon import runlog
from fmri_recon.targets import lowlevel

log = runlog.setup(snakemake.log[0])
paths = lowlevel.save_random(Path(snakemake.output.vae).parent, seed=snakemake.params.seed)
log.info("tiny random low-level models: %s", paths)
