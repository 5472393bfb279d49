"""Rule preprocess_subject: one subject's betas file and wds/ shards, rebuilt from raw NSD."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import helpers, runlog
from fmri_recon.data import preprocess, raw_nsd, rebuild

log = runlog.setup(snakemake.log[0])
inp, p = snakemake.input, snakemake.params
settings = json.loads(p.settings)
sources = {"design": inp.design, "stim_info": inp.stim_info, "roi": inp.roi, "responses": inp.responses,
           **{f"betas_session{k + 1:02d}": path for k, path in enumerate(inp.betas)}}
origin = preprocess.provenance(sources, settings)
shared = raw_nsd.read_shared1000(inp.design, inp.stim_info)
raw = {"betas": list(inp.betas), "roi": inp.roi, "responses": inp.responses}
made = rebuild.build_subject(raw, p.subject, p.sessions, settings, p.data_dir, shared, origin)
made.pop("image_ids")
helpers.write_json(snakemake.output.provenance, {**origin, "made": made})
log.info("subject %d rebuilt: %s", p.subject, made)
