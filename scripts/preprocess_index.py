"""Rule preprocess_index: shared1000.npy, COCO_73k_subj_indices.hdf5 and evals/all_images.pt, from
the design and the rebuilt shards and images."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import helpers, runlog
from fmri_recon.data import preprocess, raw_nsd

log = runlog.setup(snakemake.log[0])
inp, p = snakemake.input, snakemake.params
shared = raw_nsd.read_shared1000(inp.design, inp.stim_info)
subjects = {int(s): n for s, n in json.loads(p.subjects).items()}
ids = {s: preprocess.trial_images(p.data_dir, s, n) for s, n in subjects.items()}
preprocess.write_index_files(p.data_dir, shared, ids)
preprocess.write_eval_images(p.data_dir, p.subject)
origin = preprocess.provenance({"design": inp.design, "stim_info": inp.stim_info}, {"subjects": subjects},
                               {"shared": int(shared.sum()), "trials": {s: len(v) for s, v in ids.items()}})
helpers.write_json(snakemake.output.provenance, origin)
log.info("index files of subjects %s written", sorted(ids))
