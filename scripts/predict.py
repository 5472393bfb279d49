"""Rule predict_decode: new voxels (no ground truth) -> brain model -> prior -> decoder images + captions."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from pathlib import Path

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.decode import decoders, reconstruct
from fmri_recon.predict import prepared

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, out, p = snakemake.input, snakemake.output, snakemake.params
dec, cap = json.loads(p.decoder), json.loads(p.captions)
device, dtype = helpers.resolve_device(p.device, dec["precision"])
new = prepared.read(inp.voxels)
x = prepared.as_trained(new["voxels"], p.normalisation, p.data_dir, p.subject, p.num_sessions, p.new_test)
model = reconstruct.brain_model(inp, p.model, x.shape[-1])
expected = model.ridge.linears[p.subject_index].in_features
if x.shape[-1] != expected:
    raise nsd.DataError(f"{inp.voxels}: {x.shape[-1]} voxels, but the model of {p.experiment} reads {expected} for "
                        f"subject {p.subject}; expected predict.mask to be the mask the model was trained with")
emb = reconstruct.brain_embeddings(model, torch.from_numpy(x), prior_steps=dec["prior_steps"], seed=dec["seed"],
                                   device=device, subj_idx=p.subject_index)
del model
decoding = decoders.Decoders(inp, dec, cap, device, dtype)
progress = helpers.progress_dir(Path(out.recons).parent, "predict", {"decoder": dec, "captions": cap}, inp)
arrays = {**emb, **decoding.run_all(emb["prior_out"], progress)}
reconstruct.save_outputs({k: out[k] for k in reconstruct.FILES}, arrays)
helpers.remove_progress(progress)
log.info("%s: %d predictions, e.g. captions %s", p.experiment, len(arrays["recons"]), list(arrays["predcaptions"][:3]))
