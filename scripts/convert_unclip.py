"""Rule convert_unclip: MindEye2's sgm unCLIP checkpoint -> a diffusers decoder folder (once)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import runlog
from fmri_recon.decode import weights

log = runlog.setup(snakemake.log[0])
weights.convert_unclip_checkpoint(snakemake.input[0], snakemake.output[0])
log.info("converted %s -> %s", snakemake.input[0], snakemake.output[0])
