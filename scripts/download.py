"""Rules download / download_weights: one hub file, resumable, verified (see fmri_recon.data.hub)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import logging
from pathlib import Path

from fmri_recon import runlog
from fmri_recon.data.hub import HubDownloadError, download_file

log = runlog.setup(snakemake.log[0])
# huggingface_hub has its own stderr handler: drop it so its messages (e.g. "Trying to
# resume download...") reach the log file and stderr once, through the root logger.
logging.getLogger("huggingface_hub").handlers.clear()
p = snakemake.params
try:
    path = download_file(p.repo_id, p.filename, p.local_dir, revision=p.revision, verify=bool(p.verify),
                         repo_type=p.repo_type)
except HubDownloadError as e:
    log.error("%s", e)  # the log file says why, too
    raise
if path.resolve() != Path(snakemake.output[0]).resolve():
    raise SystemExit(f"downloaded {p.filename} to {path}, but the rule expects {snakemake.output[0]}")
log.info("done: %s", snakemake.output[0])
