"""Rule fetch_raw: one file of NSD's bucket, resumable and checked (fmri_recon.data.nsd_bucket)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from pathlib import Path

from fmri_recon import runlog
from fmri_recon.data import nsd_bucket

log = runlog.setup(snakemake.log[0])
url = snakemake.config["preprocess"]["url"]   # not a param: where a checked file came from changes nothing
got = nsd_bucket.download(snakemake.params.key, Path(snakemake.output[0]), url=url)
log.info("done: %s", got)
