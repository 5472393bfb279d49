# fmri-reconstruction: NSD fMRI -> CLIP targets -> brain model -> reconstructions -> metric tables.
# Layout: rules/*.smk one file per stage, scripts/*.py thin entry points, fmri_recon/ the logic.
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")


# The real run; overlays (demo.yaml, your own) come with --configfile and update it.
configfile: os.path.join(workflow.basedir, "config.yaml")


# The Snakefile (and each script, by its own first lines) use this checkout's fmri_recon.
sys.path.insert(0, workflow.basedir)

from fmri_recon.configuration import expand_sweeps, problems

SCHEMA = os.path.join(workflow.basedir, "schemas", "config.schema.yaml")
# An overlay removes an experiment of the config it overlays by setting it to null (demo.yaml does).
config["experiments"] = {k: v for k, v in (config.get("experiments") or {}).items() if v is not None}
config["sweeps"] = {k: v for k, v in (config.get("sweeps") or {}).items() if v is not None}  # the same for sweeps
if problems(config, SCHEMA):
    raise ValueError("invalid configuration:\n  " + "\n  ".join(problems(config, SCHEMA)))
validate(config, SCHEMA)  # fills in the schema's defaults
# Sweeps add their points as ordinary experiments, checked by the schema like any other.
SWEEPS = expand_sweeps(config, SCHEMA)
validate(config, SCHEMA)


include: "rules/common.smk"


wildcard_constraints:
    name="|".join(map(re.escape, recon_names())),
    experiment="|".join(map(re.escape, config["experiments"])),


include: "rules/data.smk"
include: "rules/preprocess.smk"
include: "rules/own_data.smk"
include: "rules/weights.smk"
include: "rules/targets.smk"
include: "rules/train.smk"
include: "rules/reconstruct.smk"
include: "rules/refine.smk"
include: "rules/evaluate.smk"
include: "rules/predict.smk"


report: "report/workflow.rst"


# The main target: every experiment trained, reconstructed, refined and scored side by side.
rule all:
    input:
        "tables/metrics.csv",
        "tables/results.md",


# `snakemake predict`: the new volumes of the `predict` block decoded, with no ground truth and no
# evaluation (rules/predict.smk, docs/own_data.md).
localrules:
    predict,


rule predict:
    input:
        lambda w: predict_dir("index.html"),
