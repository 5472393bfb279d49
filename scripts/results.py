"""Rule results: the sweeps' seed groups (mean, spread, intervals), the Pareto and learning-curve
charts, and the results page, all from tables/metrics.csv."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
import os

from fmri_recon import runlog
from fmri_recon.evaluate import tables
from fmri_recon.explore import charts, results
from fmri_recon.helpers import atomic_output

log = runlog.setup(snakemake.log[0])
out = snakemake.output
rows = tables.read_table(snakemake.input.table)
groups = results.sweep_rows(rows, json.loads(snakemake.params.sweeps))
tables.write_table(groups, out.sweeps, columns=results.SWEEP_COLUMNS)
charts.pareto_chart(rows, out.pareto)
charts.learning_curve(groups, out.learning_curve)
here = os.path.dirname(out.page)
pictures = {"Reconstructions": snakemake.input.overview, "Quality against cost": out.pareto, "Learning curve": out.learning_curve, "Metrics": snakemake.input.chart}
page = results.page(rows, groups, {k: os.path.relpath(v, here) for k, v in pictures.items()})
with atomic_output(out.page) as tmp:
    tmp.write_text(page)
log.info("%d sweep groups; page %s", len(groups), out.page)
