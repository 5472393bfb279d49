"""Rule metrics_table: every experiment's rows side by side with what each stage cost, and a bar chart."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

from fmri_recon import runlog
from fmri_recon.evaluate import tables
from fmri_recon.explore import charts, costs

log = runlog.setup(snakemake.log[0])
rows = costs.add_costs(tables.merged_rows(snakemake.input.tables), json.loads(snakemake.params.costs))
tables.write_table(rows, snakemake.output.table)
charts.metrics_bar_chart(snakemake.output.table, snakemake.output.chart)
log.info("merged %d tables into %s", len(snakemake.input.tables), snakemake.output.table)
