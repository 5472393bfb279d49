"""Rule released_output: one released evals tensor, linked (or copied) to where evaluate reads it."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import os
import shutil

from fmri_recon import helpers, runlog

log = runlog.setup(snakemake.log[0])
source, target = str(snakemake.input[0]), snakemake.output[0]
with helpers.atomic_output(target) as tmp:
    try:                                # a hard link costs no space (the enhanced tensor is 3 GB)
        os.link(source, tmp)
    except OSError:                     # another file system
        shutil.copyfile(source, tmp)
log.info("%s -> %s (%.1f MB)", source, target, os.path.getsize(target) / 1e6)
