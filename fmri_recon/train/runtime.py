"""What runs around the training loop (fmri_recon.train.loop): the accelerator (accelerate, with
DeepSpeed ZeRO-2 + CPU optimizer offload on a GPU), the optimizer's parameter groups and OneCycle,
seeding and the RNG states a checkpoint carries, last.pth written and resumed, the model built or
initialised from a released checkpoint, and what a run leaves beside its weights: log.csv, the
loss curves, train_stats.json and, if asked, Weights & Biases.
"""
from __future__ import annotations

import csv
import logging
import os
import random
import resource
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fmri_recon import helpers
from fmri_recon.models import BrainConfig, MindEyeModel
from fmri_recon.train import checkpoint, distributed, losses
from fmri_recon.train.config import TrainConfig
from fmri_recon.train.dataset import TrainData

log = logging.getLogger(__package__)   # one logger for the train stage: "fmri_recon.train"


# --------------------------------------------------------------------------- set-up
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_accelerator(tc: TrainConfig, micro_batch: int):
    """accelerate in the requested regime: fp32 weights with autocast in ``precision``, or, with
    ``deepspeed_offload``, DeepSpeed ZeRO-2 (weights in ``precision``, fp32 master weights and
    Adam state offloaded to the CPU). DeepSpeed runs on a CPU too (its CPU accelerator), which
    is how the tests exercise this path."""
    from accelerate import Accelerator, DeepSpeedPlugin
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

    cuda = torch.cuda.is_available() and tc.device != "cpu"
    if tc.precision == "fp16" and not cuda:
        raise ValueError("precision: fp16 needs a GPU; use bf16 or fp32 on a CPU")
    plugin = None
    if tc.deepspeed_offload:
        free_port = 29500 + os.getpid() % 1000          # two jobs on one node must not share a port
        for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": str(free_port)}.items():
            os.environ.setdefault(k, v)   # a single-process job started by Snakemake, not `accelerate launch`
        plugin = DeepSpeedPlugin(zero_stage=2, offload_optimizer_device="cpu",
                                 gradient_accumulation_steps=tc.grad_accum, gradient_clipping=None)
        plugin.deepspeed_config.update(   # we feed our own batches; "auto" would count processes as accelerate
            train_micro_batch_size_per_gpu=micro_batch // tc.num_processes,   # does (1 on a CPU, wrongly)
            train_batch_size=micro_batch // tc.num_processes * tc.grad_accum * tc.num_processes)
    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[tc.precision]
    if not tc.deepspeed_offload:
        # accelerate keeps one process-wide state that refuses another precision; a process that
        # trains twice (tests, benchmarks) starts from a clean one (accelerate's own tests do this)
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    # unused parameters: upstream's mixer blocks get no gradient (models/brain.py), nor does the
    # ridge of a subject a rank holds no rows of in a step
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # split_batches: the ranks share one global batch per step (fmri_recon.train.distributed), so the
    # scheduler steps once per step, not once per rank
    accelerator = Accelerator(mixed_precision=mixed, cpu=not cuda and plugin is None, kwargs_handlers=[ddp],
                              gradient_accumulation_steps=tc.grad_accum, deepspeed_plugin=plugin,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    if distributed.world()[1] != tc.num_processes:     # torch's count: accelerate's says 1 for DeepSpeed on a CPU
        raise RuntimeError(f"num_processes: {tc.num_processes} configured, but {distributed.world()[1]} "
                           "processes were launched")
    return accelerator


def uses_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type.value == "DEEPSPEED"


def param_groups(model: MindEyeModel, weight_decay: float = 1e-2) -> list[dict]:
    """Upstream's AdamW groups: ridge decays; elsewhere biases and LayerNorm weights don't."""
    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    groups = [{"params": list(model.ridge.parameters()), "weight_decay": weight_decay}]
    for part in (model.backbone, model.diffusion_prior):
        if part is None:
            continue
        named = [(n, p) for n, p in part.named_parameters() if p.requires_grad]
        groups.append({"params": [p for n, p in named if not any(k in n for k in no_decay)],
                       "weight_decay": weight_decay})
        groups.append({"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def make_scheduler(optimizer, tc: TrainConfig, total_steps: int):
    if tc.lr_scheduler == "cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=tc.max_lr, total_steps=total_steps, final_div_factor=1000,
            last_epoch=-1, pct_start=min(2 / tc.num_epochs, 0.5))   # 0.5: runs of 1-3 epochs
    # upstream's `linear`: torch's LinearLR defaults, a third of max_lr rising to max_lr
    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / 3, end_factor=1.0,
                                             total_iters=total_steps)


def init_from_pretrained(model: MindEyeModel, path: str | Path) -> None:
    """Fine-tuning start (upstream's ``load_ckpt``) from a checkpoint of ours or a released one:
    every weight of a multi-subject model but the ridge weights, which the new subject's voxel
    count shapes. QUIRK kept: the first subject's ridge *bias* is loaded into the new subject's
    ridge. Every other key must be there with the configured shape: a misfit fails before any
    training step, naming the key, both shapes and the config values that shape it."""
    state = checkpoint.read_model_state(path)

    def not_loaded(key):   # not loaded (the weights) or only the first one (the bias); clip_mean is
        # this run's statistic, set after (clip_exclude_mean, our deviation: upstream's have none)
        return key.startswith("ridge.linears.") and key != "ridge.linears.0.bias" or key == "backbone.clip_mean"

    checkpoint.check_fit(model, state, path, skip=not_loaded)
    model.load_state_dict({k: v for k, v in state.items() if not not_loaded(k)}, strict=False)


# --------------------------------------------------------------------------- state
def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rank_rng_state(ckpt: dict | None, seed: int, epoch: int) -> None:
    """Give every rank but 0 its own RNG stream (its dropout masks): the one it saved in ``ckpt``,
    else one seeded by (seed, epoch, rank). Rank 0 keeps the single-process stream."""
    rank, size = distributed.world()
    if rank == 0:
        return
    saved = (ckpt or {}).get("rng_ranks") or []
    if len(saved) == size:
        set_rng_state(saved[rank])
        return
    if ckpt is not None:
        log.warning("the checkpoint holds no RNG state for rank %d of %d: seeding it afresh", rank, size)
    rank_seed = distributed.rank_seed(seed, epoch, rank)
    random.seed(rank_seed)
    np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


# --------------------------------------------------------------------------- the run
RESUME_IGNORES = ("device", "wandb", "wandb_project", "ckpt_interval",   # may change between tries
                  "activation_checkpointing", "num_processes")


def resume_state(path: Path, brain_cfg: BrainConfig, tc: TrainConfig, data_desc: dict) -> dict | None:
    """The checkpoint to resume from, or None (none yet, or trained with another config)."""
    if not path.exists():
        return None
    ckpt = checkpoint.read(path)
    want = {k: v for k, v in asdict(tc).items() if k not in RESUME_IGNORES}
    have = {k: v for k, v in ckpt.get("train_config", {}).items() if k not in RESUME_IGNORES}
    try:
        checkpoint.check_config({**ckpt, "train_config": have}, path, config=brain_cfg.to_dict(),
                                train_config=want, data=data_desc)
    except checkpoint.CheckpointMismatch as e:
        log.warning("%s; training from scratch", e)
        return None
    if ckpt["epoch"] >= tc.num_epochs:
        # Snakemake reruns a finished training only when its code or inputs changed: start over.
        log.info("%s is a finished run; training again from scratch", path)
        return None
    log.info("resuming from %s after epoch %d", path, ckpt["epoch"])
    return ckpt


def build_model(data: TrainData, brain_cfg: BrainConfig, tc: TrainConfig, init_from, resuming: bool):
    """The brain model, seeded; initialised from ``init_from`` and given its train targets' mean
    unless a checkpoint is about to be resumed (which holds both)."""
    seed_everything(tc.seed)
    model = MindEyeModel(brain_cfg)
    if init_from and not resuming:
        init_from_pretrained(model, init_from)
    if brain_cfg.clip_exclude_mean and not resuming:    # a statistic of this run's train targets, not learnt
        model.backbone.set_clip_mean(torch.cat([data.targets[s.target_index] for s in data.subjects]))
    if model.diffusion_prior is not None:
        model.diffusion_prior.net.causal_transformer.activation_checkpointing = tc.activation_checkpointing
    return model


def save_checkpoint(path: Path, parts, state: dict) -> None:
    """``state`` plus the model and optimizer as last.pth, atomically. Under DeepSpeed the
    engine writes its own files first (``deepspeed/<tag>``: the fp32 master weights and Adam
    state it resumes from) and last.pth gets the fp32 weights gathered from them; last.pth,
    written last, names the tag, so a kill in between leaves the previous pair intact."""
    accelerator, loss_model, optimizer, scheduler = parts
    state = {**state, "lr_scheduler": scheduler.state_dict()}
    if uses_deepspeed(accelerator):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        tag, ds_dir = f"epoch{state['epoch']:04d}", path.parent / DEEPSPEED_DIR
        loss_model.save_checkpoint(str(ds_dir), tag=tag)     # every rank: its share of the optimizer
        distributed.barrier()
        if not distributed.is_main():
            return
        weights = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=tag)
        state.update(model_state_dict={k[len("model."):]: v for k, v in weights.items()},
                     optimizer_state_dict=None, deepspeed_tag=tag,
                     optimizer_hyperparameters=[{k: v for k, v in g.items() if k != "params"}
                                                for g in optimizer.param_groups])
        checkpoint.save(path, state)
        for old in ds_dir.iterdir():                     # earlier tags are superseded now
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old)
        return
    if distributed.is_main():       # DDP: every rank holds the same weights and optimizer state
        state.update(model_state_dict=accelerator.unwrap_model(loss_model).model.state_dict(),
                     optimizer_state_dict=optimizer.state_dict())
        checkpoint.save(path, state)


def checkpoint_state(epoch: int, brain_cfg: BrainConfig, tc: TrainConfig, data_desc: dict,
                     progress: Progress) -> dict:
    """last.pth's contents but weights and optimizer: upstream's keys, the configs a resume checks,
    the RNG states and the progress a resume continues from."""
    history, ranks = progress.history, distributed.gather_objects(rng_state())   # every rank calls this
    return {"epoch": epoch + 1, "train_losses": [r["train_loss_total"] for r in history],
            "test_losses": [r["val_loss_clip"] for r in history], "lrs": [r["lr"] for r in history],
            "config": brain_cfg.to_dict(), "train_config": asdict(tc), "data": data_desc,
            "rng": rng_state(), "rng_ranks": ranks if len(ranks) > 1 else None, "elapsed_s": progress.elapsed, "peak_memory_mb": progress.peak, "history": history}


def finish(out_dir: Path, data_desc: dict, tc: TrainConfig, accelerator, counts: dict, progress: Progress) -> dict:
    """The finished run's summary, written as train_stats.json beside its loss_curve.png."""
    history = progress.history
    stats = {"experiment_data": data_desc, "epochs": tc.num_epochs, "wall_time_s": progress.elapsed,
             "peak_memory_mb": progress.peak, "device": str(accelerator.device), "precision": tc.precision,
             "deepspeed": uses_deepspeed(accelerator), "params": counts,
             "final": history[-1] if history else {}, "chance": 1 / max(history[-1]["val_images"], 1) if history else None,
             "checkpoint": str(out_dir / "last.pth")}
    plot_curves(out_dir / "loss_curve.png", history)
    helpers.write_json(out_dir / "train_stats.json", stats)
    return stats


def log_start(data_desc: dict, tc: TrainConfig, accelerator, steps_per_epoch: int, start: int, counts: dict) -> None:
    """One line saying what is about to train, where, and from which epoch."""
    log.info("training %s on %s (%s%s): %d steps/epoch, epochs %d..%d, params %s", data_desc, accelerator.device,
             tc.precision, ", DeepSpeed ZeRO-2 offload" if uses_deepspeed(accelerator) else "", steps_per_epoch,
             start + 1, tc.num_epochs, counts)


DEEPSPEED_DIR = "deepspeed"      # DeepSpeed's own checkpoint files, beside last.pth


def write_log_csv(path: Path, rows: list[dict]) -> None:
    with helpers.atomic_output(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, rows: list[dict]) -> None:
    """Train losses and validation retrieval per epoch, with chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k in losses.LOSSES:
        if f"train_loss_{k}" in rows[0]:
            a.plot(epochs, [r[f"train_loss_{k}"] for r in rows], label=f"train {k}")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_title("training losses")
    a.legend()
    b.plot(epochs, [r["val_image_to_brain"] for r in rows], label="image->brain (paper: Image retrieval)")
    b.plot(epochs, [r["val_brain_to_image"] for r in rows], label="brain->image (paper: Brain retrieval)")
    b.axhline(1 / rows[-1]["val_images"], color="grey", ls="--", label="chance")
    b.set_ylim(0, 1)
    b.set_xlabel("epoch")
    b.set_title(f"test top-1 retrieval ({rows[-1]['val_images']}-way)")
    b.legend(fontsize=8)
    fig.tight_layout()
    with helpers.atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def start_wandb(tc: TrainConfig, brain_cfg: BrainConfig, data_desc: dict):
    if not tc.wandb:
        return None
    try:
        import wandb
    except ImportError as e:
        raise ImportError("wandb: true in the config, but the wandb package is not installed (pip install wandb)") from e
    wandb.init(project=tc.wandb_project, config={**asdict(tc), **brain_cfg.to_dict(), **data_desc})
    return wandb


@dataclass
class Progress:
    """What a run has done so far: carried from epoch to epoch, and restored from a checkpoint."""
    start: int = 0                  # epochs already trained
    history: list = field(default_factory=list)   # one log row per epoch
    elapsed: float = 0.0            # seconds spent training and validating
    peak: float = 0.0               # peak memory, MiB

    @classmethod
    def resumed(cls, ckpt: dict | None) -> "Progress":
        """A fresh run's progress, or that of the checkpoint it resumes."""
        if ckpt is None:
            return cls()
        return cls(ckpt["epoch"], ckpt["history"], ckpt["elapsed_s"], ckpt["peak_memory_mb"])


def teacher_on_augmented(teacher, device, autocast):
    """images (B,3,224,224) in [0,1] -> teacher features of ``blur_augs`` of them (no gradient)."""
    from fmri_recon.targets.lowlevel import blur_augs, normalise

    teacher, augs = teacher.to(device).eval().requires_grad_(False), blur_augs()

    @torch.no_grad()
    def features(images):
        with autocast():
            return teacher(normalise(augs(images))).float()
    return features
