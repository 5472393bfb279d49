"""Rule check_release: the rebuilt files of one subject against the released ones (fmri_recon.data.release_check)."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import pandas as pd

from fmri_recon import helpers, runlog
from fmri_recon.data import release_check

log = runlog.setup(snakemake.log[0])
p = snakemake.params
stimuli = snakemake.input.stimuli[0] if snakemake.input.stimuli else None   # preprocess.images: release -> none
rows = release_check.check(p.data_dir, p.release_dir, stimuli, p.subject, p.sessions)
with helpers.atomic_output(snakemake.output[0]) as tmp:
    pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)
for r in rows:
    log.info("%s  %s: %s %s", r["item"], r["measure"], r["value"], r["note"])
