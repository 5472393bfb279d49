"""Rule reconstruct: brain model (or ground truth, for an upper bound) -> prior -> decoder + captions."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from pathlib import Path

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.decode import decoders, reconstruct
from fmri_recon.targets import clip_targets
from fmri_recon.train import dataset

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, out, p, name = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards.name
dec, cap = json.loads(p.decoder), json.loads(p.captions)
device, dtype = helpers.resolve_device(p.device, dec["precision"])
split = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test)

if p.kind == "experiment":                             # predictions from the brain
    data = dataset.load(p.data_dir, [p.subject], p.num_sessions, p.new_test, inp.targets,
                        normalisation=p.normalisation)
    model = reconstruct.brain_model(inp, p.model, data.subjects[0].num_voxels)
    emb = reconstruct.brain_embeddings(model, data.subjects[0].test_voxels, prior_steps=dec["prior_steps"],
                                       seed=dec["seed"], device=device)
    del model, data                                    # the decoder gets the card to itself
    if device.type == "cuda":
        torch.cuda.empty_cache()
else:                                                  # upper bound: ground-truth targets
    truth = torch.from_numpy(clip_targets.TargetCache(inp.targets).get(split.test_images)).float()
    emb = {"backbones": truth, "clipvoxels": truth, "prior_out": truth}

decoding = decoders.Decoders(inp, dec, cap, device, dtype)
progress = helpers.progress_dir(Path(out.recons).parent, "reconstruct", {"decoder": dec, "captions": cap,
                                                                         "name": name}, inp)
arrays = {**emb, **decoding.run_all(emb["prior_out"], progress)}
reconstruct.save_outputs({k: out[k] for k in reconstruct.FILES}, arrays)
helpers.remove_progress(progress)
log.info("%s: %d reconstructions, e.g. captions %s", name, len(arrays["recons"]), list(arrays["predcaptions"][:3]))
