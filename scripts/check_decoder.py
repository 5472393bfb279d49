"""Rule check_decoder: which CLIP token space the unCLIP decoder expects (run it before training)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.evaluate import decoder_check
from fmri_recon.targets import clip_targets
from fmri_recon.decode.unclip import UnclipDecoder

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
dec, targets, clip = json.loads(p.decoder), json.loads(p.targets), json.loads(p.clip)
device, dtype = helpers.resolve_device(p.device, dec["precision"])
images = nsd.load_eval(p.data_dir, nsd.EVAL_IMAGES)[:dec["check_images"]].float()
visual = clip_targets.load_vision(clip["arch"], inp.clip_weights, device, torch.float32)
decoder = UnclipDecoder.from_pretrained(inp.decoder, device=device, dtype=dtype)
scores = decoder_check.score_spaces(visual, decoder, images.to(device), zero_one_quirk=targets["zero_one_quirk"],
                                    seed=dec["seed"], decode=dict(num_steps=dec["steps"], guidance=dec["guidance"],
                                                                  batch_size=dec["batch_size"]))
expected, line = decoder_check.verdict(scores, targets["token_norm"], len(images))
log.info("%s", line)
helpers.write_json(snakemake.output[0], {"expects": expected, "configured": targets["token_norm"], "scores": scores,
                                     "images": len(images), "report": line})
if expected is not None and expected != targets["token_norm"]:
    raise SystemExit(f"check_decoder: {line}")
