"""Rule refine: SD-XL img2img of the reconstructions with the predicted captions as prompts."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from pathlib import Path

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.decode import refine

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
cfg = json.loads(p.settings)
device, dtype = helpers.resolve_device(p.device, cfg["precision"])
recons = nsd.load_eval(Path(inp.recons).parent, Path(inp.recons).name).float()
prompts = [str(c) for c in nsd.load_eval(Path(inp.captions).parent, Path(inp.captions).name)]
pipe = refine.load_pipeline(inp.base, device=device, dtype=dtype, cpu_offload=cfg["cpu_offload"],
                            single_file_config=inp.get("single_file_config"))
out = Path(snakemake.output[0])
progress = helpers.progress_dir(out.parent, "refine", cfg, inp)


def work(start, stop):
    return refine.refine(pipe, recons[start:stop], prompts[start:stop], steps=cfg["steps"], guidance=cfg["guidance"],
                         size=cfg["size"], seed=cfg["seed"] + start, batch_size=cfg["batch_size"])


chunks = helpers.chunked(len(recons), cfg["chunk"], progress, work)
with helpers.atomic_output(out) as tmp:
    torch.save(torch.cat(chunks).float(), tmp)
helpers.remove_progress(progress)
log.info("refined %d images -> %s", len(recons), out)
