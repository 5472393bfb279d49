"""Rule overview: the reconstructions side by side (tables/overview.png), as each row scores them."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import runlog
from fmri_recon.evaluate import figures, score

log = runlog.setup(snakemake.log[0])
p = snakemake.params
loaded = {}


def images(path):
    if path not in loaded:
        loaded[path] = score.load_pt(path).float()
    return loaded[path]


columns = [("ground truth", images(snakemake.input.gt_images))]
for title, path, blurry in json.loads(p.columns):
    columns.append((title, score.blend_blurry(images(path), images(blurry), p.blend) if blurry else images(path)))
captions = [str(c) for c in score.load_pt(snakemake.input.captions)]
figures.grid_png(columns, captions, snakemake.output[0], n=p.rows, caption_title=p.caption_title,
                  cell_px=figures.SMALL_CELL_PX)
log.info("%d columns, %d rows: %s", len(columns), p.rows, snakemake.output[0])
