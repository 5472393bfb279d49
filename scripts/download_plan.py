"""Rule download_plan: every hub file the config downloads, its size from the hub, and what is here."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import csv
import json
import os

from fmri_recon import helpers, runlog
from fmri_recon.data import hub

log = runlog.setup(snakemake.log[0])
rows = []
for repo_type, repo_id, filename, local in json.loads(snakemake.params.files):
    revision = snakemake.params.revision if repo_type == "dataset" else "main"
    size = hub.file_size(repo_id, filename, revision=revision, repo_type=repo_type)
    here = os.path.exists(local) and (size is None or os.path.getsize(local) == size)
    rows.append({"repo": repo_id, "file": filename, "bytes": "" if size is None else size,
                 "status": "here" if here else "to download", "path": local})
with helpers.atomic_output(snakemake.output[0]) as tmp, open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["repo", "file", "bytes", "status", "path"],
                            delimiter="\t")
    writer.writeheader()
    writer.writerows(rows)
todo = [r for r in rows if r["status"] == "to download"]
unknown = sum(r["bytes"] == "" for r in todo)
log.info("%d hub files, %d to download: %.2f GB%s (%d already here)", len(rows), len(todo),
         sum(r["bytes"] or 0 for r in todo) / 1e9, f", plus {unknown} of unknown size" if unknown else "",
         len(rows) - len(todo))
