"""Rule synthesize: write the synthetic dataset in the pscotti/mindeyev2 layout."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import runlog
from fmri_recon.data import synthetic

log = runlog.setup(snakemake.log[0])
cfg = synthetic.SyntheticConfig(**json.loads(snakemake.params.synthetic))
resize = json.loads(snakemake.params.resize)        # imgBrick-sized photos -> image_size, as preprocessing does
made = synthetic.write_dataset(cfg, snakemake.params.data_dir, (resize["image_resize"], resize["image_antialias"]))
log.info("wrote %s under %s", made, snakemake.params.data_dir)
