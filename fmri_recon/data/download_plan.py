"""The download bill: checks/download_plan.tsv (every hub file the config downloads, its size from
the hub's metadata, whether it is here) and the line every run says about what is left to fetch.

Light on purpose (no huggingface_hub): the Snakefile reads the bill while it builds the DAG.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from fmri_recon import helpers

COLUMNS = ("repo", "file", "bytes", "status", "path")


def write_plan(rows: list[dict], path: str | Path) -> None:
    """The bill as a tab-separated table, written atomically (``bytes`` empty: size unknown)."""
    with helpers.atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def summary(todo: list[tuple[str, str]], plan: str | Path) -> str:
    """One line on the files ``todo`` (hub or NSD bucket) ((repo, file) pairs) still to fetch: how many, and how
    many GB once the bill ``plan`` has their sizes. No network: the DAG is being built."""
    sizes = {}
    if os.path.exists(plan):
        with open(plan, newline="") as f:
            sizes = {(r["repo"], r["file"]): r["bytes"] for r in csv.DictReader(f, delimiter="\t")}
    known = [sizes.get(key) for key in todo]
    if all(known):
        return f"download: {len(todo)} files to fetch, {sum(map(int, known)) / 1e9:.2f} GB ({plan})"
    return (f"download: {len(todo)} files to fetch; `snakemake {plan}` gives their sizes "
            "from the hub's metadata (HEAD requests only)")
