"""Rule check_data: read and cross-check every file of the run; record what the data are."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import helpers, runlog
from fmri_recon.data import nsd

log = runlog.setup(snakemake.log[0])
p = snakemake.params
split = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test)
nsd.check_finite_betas(split)
nsd.check_evals(split, p.captions)
summary = split.summary()
log.info("data of subject %d: %s", p.subject, summary)
helpers.write_json(snakemake.output[0], summary)
