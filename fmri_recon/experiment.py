"""Which experiment keys each stage depends on (kept free of heavy imports: the Snakefile uses it).

Experiments are ``model`` defaults plus per-experiment overrides (config.yaml). A stage gets
only its own keys as rule params, so changing, say, a training setting reruns training and
what follows it, and changing a resource request (``train_mem_mb``) reruns nothing.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent    # fmri_recon/

# The keys an experiment routes to the brain model and to training are the fields of BrainConfig
# and TrainConfig, read from their source (this module must stay free of torch: the Snakefile
# imports it). A new key is the schema's entry and the dataclass field that uses it, no list here.
FROM_DATA = ("num_voxels", "clip_seq_dim", "clip_emb_dim")    # BrainConfig fields set from the data and clip_models
NO_EFFECT = ("device", "wandb", "wandb_project", "num_processes")   # TrainConfig fields that leave the result as is


def dataclass_fields(module: str, name: str) -> tuple[str, ...]:
    """The field names of dataclass ``name`` in ``fmri_recon/<module>``, in order, from its source."""
    tree = ast.parse((PACKAGE / module).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return tuple(n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))


# Brain model architecture (fmri_recon.models.BrainConfig fields, minus the data-derived ones).
MODEL_KEYS = tuple(k for k in dataclass_fields("models/brain.py", "BrainConfig") if k not in FROM_DATA)
# Optimisation (fmri_recon.train.config.TrainConfig fields that change the result).
TRAIN_KEYS = tuple(k for k in dataclass_fields("train/config.py", "TrainConfig") if k not in NO_EFFECT)
# Data and initialisation (normalisation: how the voxels are z-scored, fmri_recon.data.normalise).
DATA_KEYS = ("clip_target", "subjects", "num_sessions", "normalisation", "init_from")
# An experiment with a ``checkpoint`` (a released model) is not trained: its stages load that file.
CHECKPOINT_KEY = "checkpoint"
# An experiment with ``outputs`` (a released evals/ folder) is only scored: these files of it, as
# upstream's recon_inference and enhanced notebooks write them (the blurry ones with blurry_recon).
OUTPUTS_KEY = "outputs"
RELEASED_OUTPUTS = ("recons", "enhancedrecons", "clipvoxels", "predcaptions")
# Read by the stage but without effect on its result (no rerun when they change).
RUNTIME_KEYS = (*NO_EFFECT, "train_mem_mb", "train_runtime")


def resolve(config: dict, name: str) -> dict:
    """One experiment's settings: ``model`` defaults, its overrides, data defaults filled in."""
    exp = {**config["model"], **(config["experiments"][name] or {})}
    exp.setdefault("subjects", [config["subject"]])
    exp.setdefault("num_sessions", config["num_sessions"])
    return exp


def train_params(config: dict, name: str) -> str:
    """What training depends on, as a canonical JSON string (key order never matters)."""
    exp = resolve(config, name)
    keys = set(MODEL_KEYS) | set(TRAIN_KEYS) | set(DATA_KEYS)
    out = {k: v for k, v in exp.items() if k in keys}
    out["clip"] = config["clip_models"][exp["clip_target"]]
    out["new_test"] = config["new_test"]
    return json.dumps(out, sort_keys=True)


def model_params(config: dict, name: str) -> str:
    """The brain model's architecture of an experiment (what a checkpoint it loads must fit)."""
    exp = resolve(config, name)
    out = {k: exp[k] for k in MODEL_KEYS if k in exp}
    out["clip"] = config["clip_models"][exp["clip_target"]]
    return json.dumps(out, sort_keys=True)


def voxel_reading(config: dict, name: str) -> dict:
    """How the stages after training (reconstruct, blurry) read the voxels of run ``name``: as its
    experiment was trained, ``{"num_sessions", "normalisation"}`` (train_sessions statistics come
    from those sessions). A run that is not an experiment (an upper bound: no brain model) reads
    the file as it is, with the top-level num_sessions."""
    if name not in config["experiments"]:
        return {"num_sessions": config["num_sessions"], "normalisation": "all_sessions"}
    exp = resolve(config, name)
    return {"num_sessions": exp["num_sessions"], "normalisation": exp["normalisation"]}


def brain_config(settings: dict, num_voxels: list[int]):
    """``BrainConfig`` of ``settings`` (``model_params`` or the train params, parsed) for subjects
    with ``num_voxels``."""
    from fmri_recon.models import BrainConfig

    return BrainConfig(num_voxels=list(num_voxels), clip_seq_dim=settings["clip"]["seq_dim"],
                       clip_emb_dim=settings["clip"]["emb_dim"], **{k: settings[k] for k in MODEL_KEYS if k in settings})


def used_clip_models(config: dict) -> list[str]:
    """The CLIP spaces the config's experiments predict."""
    return sorted({resolve(config, e)["clip_target"] for e in config["experiments"]})


def sessions_of(config: dict, names, out: dict | None = None) -> dict[int, int]:
    """{subject: sessions} the experiments ``names`` read (the most sessions of each subject)."""
    out = dict(out or {})
    for exp in (resolve(config, n) for n in names):
        for s in exp["subjects"]:
            out[s] = max(out.get(s, 0), exp["num_sessions"])
    return out


def subject_sessions(config: dict, clip: str | None = None) -> dict[int, int]:
    """{subject: sessions} every experiment (of CLIP space ``clip``, if given) reads. A space no
    experiment predicts (the decoder's, when every experiment predicts another) is read by the
    converters into it, which learn from the images of every experiment's runs."""
    if clip is None or clip not in used_clip_models(config):
        return sessions_of(config, config["experiments"], {config["subject"]: config["num_sessions"]})
    return sessions_of(config, [e for e in config["experiments"] if resolve(config, e)["clip_target"] == clip])
