"""Rule metrics_table: every experiment's rows side by side, and a bar chart of them."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import pictures, runlog, tables

log = runlog.setup(snakemake.log[0])
tables.merge_tables(snakemake.input.tables, snakemake.output.table)
pictures.metrics_bar_chart(snakemake.output.table, snakemake.output.chart)
log.info("merged %d tables into %s", len(snakemake.input.tables), snakemake.output.table)
