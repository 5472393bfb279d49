"""Rule download_plan: every hub file (and NSD bucket file, with preprocess.source: raw) the config
downloads, its size from the hub's metadata or the bucket's HEAD answer, and what is here."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
import os

from fmri_recon import runlog
from fmri_recon.data import download_plan, hub, nsd_bucket

log = runlog.setup(snakemake.log[0])
rows = []
for repo_type, repo_id, filename, local in json.loads(snakemake.params.files):
    if repo_type == "bucket":                       # repo_id: the bucket's URL
        size = nsd_bucket.head(filename, repo_id)[0]
    else:
        revision = snakemake.params.revision if repo_type == "dataset" else "main"
        size = hub.file_size(repo_id, filename, revision=revision, repo_type=repo_type)
    here = os.path.exists(local) and (size is None or os.path.getsize(local) == size)
    rows.append({"repo": repo_id, "file": filename, "bytes": "" if size is None else size,
                 "status": "here" if here else "to download", "path": local})
download_plan.write_plan(rows, snakemake.output[0])
todo = [r for r in rows if r["status"] == "to download"]
unknown = sum(r["bytes"] == "" for r in todo)
log.info("%d files, %d to download: %.2f GB%s (%d already here)", len(rows), len(todo),
         sum(r["bytes"] or 0 for r in todo) / 1e9, f", plus {unknown} of unknown size" if unknown else "",
         len(rows) - len(todo))
