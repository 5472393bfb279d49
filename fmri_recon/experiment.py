"""Which experiment keys each stage depends on (kept free of heavy imports: the Snakefile uses it).

Experiments are ``model`` defaults plus per-experiment overrides (config.yaml). A stage gets
only its own keys as rule params, so changing, say, a training setting reruns training and
what follows it, and changing a resource request (``train_mem_mb``) reruns nothing.
"""
from __future__ import annotations

import json

# Brain model architecture (fmri_recon.models.BrainConfig fields, minus the data-derived ones).
MODEL_KEYS = ("hidden_dim", "n_blocks", "backbone", "blurry_recon", "drop", "use_prior", "prior_depth",
              "prior_dim_head", "prior_heads", "prior_timesteps", "prior_cond_drop_prob", "clip_scale",
              "clip_exclude_mean")
# Optimisation (fmri_recon.train.loop.TrainConfig fields that change the result).
TRAIN_KEYS = ("num_epochs", "batch_size", "grad_accum", "max_lr", "lr_scheduler", "mixup_pct", "clip_scale",
              "prior_scale", "blur_scale", "blur_mix_targets", "ckpt_interval", "seed", "precision", "deepspeed_offload",
              "activation_checkpointing", "val_images")
# Data and initialisation.
DATA_KEYS = ("clip_target", "subjects", "num_sessions", "init_from")
# An experiment with a ``checkpoint`` (a released model) is not trained: its stages load that file.
CHECKPOINT_KEY = "checkpoint"
# An experiment with ``outputs`` (a released evals/ folder) is only scored: these files of it, as
# upstream's recon_inference and enhanced notebooks write them (the blurry ones with blurry_recon).
OUTPUTS_KEY = "outputs"
RELEASED_OUTPUTS = ("recons", "enhancedrecons", "clipvoxels", "predcaptions")
# Read by the stage but without effect on its result (no rerun when they change).
RUNTIME_KEYS = ("device", "wandb", "wandb_project", "train_mem_mb", "train_runtime")


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


def brain_config(settings: dict, num_voxels: list[int]):
    """``BrainConfig`` of ``settings`` (``model_params`` or the train params, parsed) for subjects
    with ``num_voxels``."""
    from fmri_recon.models import BrainConfig

    return BrainConfig(num_voxels=list(num_voxels), clip_seq_dim=settings["clip"]["seq_dim"],
                       clip_emb_dim=settings["clip"]["emb_dim"], **{k: settings[k] for k in MODEL_KEYS if k in settings})
