"""Rule prepare_own: a lab's own scans (dataset: own) -> the pscotti/mindeyev2 layout, with provenance."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import helpers, runlog
from fmri_recon.data import own_build, preprocess

log = runlog.setup(snakemake.log[0])
inp, p = snakemake.input, snakemake.params
settings, resize = json.loads(p.settings), json.loads(p.resize)
sources = {"mask": inp.mask, "trials": inp.trials, **{f"betas_session{k + 1:02d}": f for k, f in enumerate(inp.sessions)}}
origin = preprocess.provenance(sources, {**settings, **resize})
made = own_build.build(settings, p.subject, p.data_dir, resize, origin)
helpers.write_json(snakemake.output.provenance, {**origin, "made": made})
log.info("own data of subject %d made into the layout: %s", p.subject, made)
