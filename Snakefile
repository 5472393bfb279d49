# fmri-reconstruction: NSD fMRI -> CLIP targets -> brain model -> reconstructions -> metric tables.
# Layout: rules/*.smk one file per stage, scripts/*.py thin entry points, fmri_recon/ the logic.
import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The real run; overlays (demo.yaml, your own) come with --configfile and update it.
configfile: os.path.join(workflow.basedir, "config.yaml")


# The Snakefile (and each script, by its own first lines) use this checkout's fmri_recon.
sys.path.insert(0, workflow.basedir)

from fmri_recon.configuration import problems

SCHEMA = os.path.join(workflow.basedir, "schemas", "config.schema.yaml")
if problems(config, SCHEMA):
    raise ValueError("invalid configuration:\n  " + "\n  ".join(problems(config, SCHEMA)))
validate(config, SCHEMA)  # fills in the schema's defaults


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/weights.smk"
include: "rules/targets.smk"
include: "rules/train.smk"


rule all:
    input:
        [subject_summary(s) for s in subject_sessions()],
        [targets_path(c) for c in used_clip_models()],
        [train_stats(e) for e in config["experiments"]],
