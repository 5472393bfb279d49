# Small input functions and config helpers shared by the rules.
import json
import os
import re

from snakemake.exceptions import WorkflowError

from fmri_recon import nsd, synthetic

SUBJECT = config["subject"]
DATA = config["data_dir"]
WEIGHTS = config.get("weights_dir", "weights")
HUB = config.get("hub", {})
ENVS = os.path.join(workflow.basedir, "envs")


def data_path(rel):
    return os.path.join(DATA, rel)


def as_param(obj):
    """Config values as rule params, serialised so that reordering YAML keys changes nothing."""
    return json.dumps(obj, sort_keys=True)


def experiment(name):
    """The model settings of one experiment: `model` defaults with its overrides."""
    return {**config["model"], **(config["experiments"][name] or {})}


def used_clip_models():
    return sorted({experiment(e)["clip_target"] for e in config["experiments"]})


def needed_files():
    """The hub files this config reads, relative to data_dir."""
    return nsd.required_files(SUBJECT, config["num_sessions"], config["new_test"])


def subject_summary(subject=SUBJECT):
    return f"cache/data/subj{subject:02d}.json"


def targets_path(clip):
    return f"cache/clip_targets/{clip}.hdf5"


def clip_weights(clip):
    """Local file of a clip_models entry: a hub file under weights_dir/hub, or a random model."""
    spec = config["clip_models"][clip]["weights"]
    if spec == "random":
        return f"{WEIGHTS}/random/open_clip/{clip}.safetensors"
    return f"{WEIGHTS}/hub/{spec[len('hf://'):]}"


def _check_config():
    """Checks the schema cannot express; each names the key at fault."""
    for name in config["experiments"]:
        clip = experiment(name)["clip_target"]
        if clip not in config["clip_models"]:
            raise WorkflowError(f"config: experiments.{name}.clip_target = {clip!r} is not a key of "
                                f"clip_models (have {sorted(config['clip_models'])})")
    if config["dataset"] == "synthetic":
        syn = config["synthetic"]
        if SUBJECT not in syn["subjects"]:
            raise WorkflowError(f"config: subject = {SUBJECT} but synthetic.subjects = {syn['subjects']}")
        if config["num_sessions"] > syn["num_sessions"]:
            raise WorkflowError(f"config: num_sessions = {config['num_sessions']} exceeds "
                                f"synthetic.num_sessions = {syn['num_sessions']}")
    elif not config["download"]:
        missing = [f for f in needed_files() if not os.path.exists(data_path(f))]
        if missing:
            raise WorkflowError(f"download: false, but these files are missing under data_dir "
                                f"({DATA}): {', '.join(missing)}. Put them there (the pscotti/mindeyev2 "
                                "layout) or set download: true.")


_check_config()
