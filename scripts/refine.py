"""Rule refine: SD-XL img2img of the reconstructions with the predicted captions as prompts."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from pathlib import Path

import torch

from fmri_recon import clip_targets, nsd, reconstruct, refine, runlog

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
cfg = json.loads(p.settings)
device, dtype = clip_targets.resolve_device(p.device, cfg.get("precision", "auto"))
recons = nsd.load_eval(Path(inp.recons).parent, Path(inp.recons).name).float()
prompts = [str(c) for c in nsd.load_eval(Path(inp.captions).parent, Path(inp.captions).name)]
pipe = refine.load_pipeline(inp.base, device=device, dtype=dtype, cpu_offload=cfg["cpu_offload"],
                            single_file_config=inp.get("single_file_config"))
out = Path(snakemake.output[0])
inputs = [(str(x), Path(x).stat().st_mtime_ns) for x in inp]      # a new input never reuses old chunks
progress = out.parent / f".progress-refine-{reconstruct.settings_key({'cfg': cfg, 'inputs': inputs})}"


def work(start, stop):
    return refine.refine(pipe, recons[start:stop], prompts[start:stop], steps=cfg.get("steps", 25),
                         guidance=cfg.get("guidance", 5.0), size=cfg.get("size", 768), seed=cfg.get("seed", 42) + start,
                         device=device, dtype=dtype, batch_size=cfg.get("batch_size", 2))


chunks = reconstruct.chunked(len(recons), cfg.get("chunk", 50), progress, work)
with nsd.atomic_output(out) as tmp:
    torch.save(torch.cat(chunks).float(), tmp)
reconstruct.finish(progress)
log.info("refined %d images -> %s", len(recons), out)
