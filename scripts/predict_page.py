"""Rule predict_page: the predictions as PNGs, a grid and an HTML page (nothing scored)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from pathlib import Path

import numpy as np
import torch

from fmri_recon import runlog
from fmri_recon.data import nsd, own_input, preprocess
from fmri_recon.predict import page, prepared

log = runlog.setup(snakemake.log[0])
inp, out, p = snakemake.input, snakemake.output, snakemake.params


def load(path):
    return nsd.load_eval(Path(path).parent, Path(path).name)


new = prepared.read(inp.voxels)
seen = None
if p.images and any(new["images"]):   # shown for a look, never scored
    files = own_input.find_images(p.images, [i for i in new["images"] if i])
    blank = np.full((3, preprocess.IMAGE_SIZE, preprocess.IMAGE_SIZE), 0.5, np.float16)
    seen = torch.from_numpy(np.stack([own_input.load_image(files[i], preprocess.IMAGE_SIZE, "bilinear", True)
                                      if i else blank for i in new["images"]]).astype(np.float32))
blurry = load(inp.blurry[0]).float() if inp.blurry else None
page.write({"page": out.page, "grid": out.grid, "captions": out.captions, "images": out.images}, new["labels"],
           load(inp.recons).float(), load(inp.enhanced).float(), [str(c) for c in load(inp.captions)], seen,
           blurry, title=f"{p.experiment}: predictions from brain activity", rows=p.rows, blend=p.blend)
log.info("%d predictions shown in %s", len(new["labels"]), out.page)
