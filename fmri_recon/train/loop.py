"""The train stage's loop: the step, the epoch and the run, from cached CLIP targets and voxels to
``train_logs/{experiment}/last.pth``. What runs around it (accelerator, optimizer, RNG, checkpoint
I/O, logs and plots) is in fmri_recon.train.runtime.

Follows MindEye2's recipe (docs/upstream.md §2.6-2.7): BiMixCo for the first ``mixup_pct``
of the epochs, then SoftCLIP with a rising temperature; the prior's MSE; with the blurry
branch, L1 to the VAE latents plus 0.1 x the soft distillation loss against the ConvNeXt
teacher on augmented images (both cached or run by fmri_recon.targets.lowlevel); AdamW with
upstream's parameter groups; OneCycle; gradient accumulation so a 24 GB card reaches the
global batch. accelerate runs it in fp32/bf16/fp16, with DeepSpeed ZeRO-2 + CPU optimizer
offload on a GPU. A checkpoint every ``ckpt_interval`` epochs carries the RNG states, so a
killed run resumes where it stopped and ends with the same weights.

An epoch has upstream's number of steps (``750 * sessions`` samples, ``750 * 40`` multi-subject,
over the global batch), drawn from back-to-back permutations of the train trials where upstream
samples with replacement. Like upstream, a subject's share of a batch that holds the same image
twice is drawn again (a contrastive loss would count it as its own negative), so every epoch has
exactly its number of steps and OneCycle reaches its end.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from fmri_recon.models import BrainConfig, MindEyeModel, parameter_counts
from fmri_recon.train import distributed, losses
from fmri_recon.train.config import TrainConfig
from fmri_recon.train.dataset import TrainData
from fmri_recon.train.runtime import (  # what runs around the loop: set-up, state, output
    DEEPSPEED_DIR, Progress, build_model, checkpoint_state, finish, log_start, make_accelerator,
    make_scheduler, param_groups, peak_memory_mb, rank_rng_state, resume_state, save_checkpoint,
    set_rng_state, start_wandb, teacher_on_augmented, uses_deepspeed, write_log_csv,
)
from fmri_recon.train.validation import validate

log = logging.getLogger(__package__)   # one logger for the train stage: "fmri_recon.train"


# --------------------------------------------------------------------------- one step
class LossModel(torch.nn.Module):
    """The whole training computation in one forward, so accelerate/DeepSpeed wrap all of it."""

    def __init__(self, model: MindEyeModel, tc: TrainConfig):
        super().__init__()
        self.model, self.tc = model, tc

    def forward(self, voxels: list, subj_idx: list, targets, mix=None, temp: float = 0.006, low=None,
                rows: slice | None = None, noise_seed: int | None = None) -> dict:
        """``voxels``: this rank's ``rows`` of the global micro-batch, per subject ``subj_idx``;
        ``targets`` and ``mix``: the whole global micro-batch's (fmri_recon.train.distributed);
        ``low``: (latent targets and teacher features of the global micro-batch, teacher features
        of this rank's augmented images); ``noise_seed``: the prior's timesteps and noise."""
        rows = rows if rows is not None else slice(None)
        backbone, clip_voxels, blur = self.model(voxels, subj_idx)
        zero = torch.zeros((), device=targets.device)
        out = {"prior": zero, "clip": zero, "blur_l1": zero, "blur_cont": zero}
        if self.model.diffusion_prior is not None and self.tc.prior_scale > 0:
            # QUIRK kept: during mixup the prior sees mixed-voxel backbones and unmixed targets.
            times, noise = self.prior_noise(targets, noise_seed)
            out["prior"] = self.model.diffusion_prior(text_embed=backbone, image_embed=targets[rows],
                                                      times=times[rows], noise=noise[rows])[0]
        if clip_voxels is not None and self.tc.clip_scale > 0:
            pred = distributed.gather(losses.flat_normalise(clip_voxels))
            targ = losses.flat_normalise(targets)
            out["clip"] = (losses.mixco_nce(pred, targ, 0.006, *mix) if mix is not None
                           else losses.soft_clip_loss(pred, targ, temp))
        if low is not None:
            out["blur_l1"], out["blur_cont"] = self.blur_losses(blur, *low, mix, rows)
        out["total"] = (self.tc.prior_scale * out["prior"] + self.tc.clip_scale * out["clip"]
                        + self.tc.blur_scale * (out["blur_l1"] + 0.1 * out["blur_cont"]))
        return out

    def prior_noise(self, targets, seed: int | None):
        """The prior's timesteps and noise for the global micro-batch: from ``seed`` (the same on
        every rank), or from the RNG stream when no seed is given."""
        prior = self.model.diffusion_prior
        gen = None if seed is None else torch.Generator(device=targets.device).manual_seed(seed)
        times = torch.randint(0, prior.num_timesteps, (len(targets),), generator=gen, device=targets.device)
        return times, torch.randn(targets.shape, generator=gen, device=targets.device, dtype=targets.dtype)

    def blur_losses(self, blur, latents, teacher, teacher_aug, mix, rows: slice):
        pred_latents, aux = blur
        if mix is not None and self.tc.blur_mix_targets:
            perm, betas, _ = mix
            b = betas.view(-1, 1, 1, 1).to(latents.dtype)
            latents = latents * b + latents[perm] * (1 - b)
        l1 = torch.nn.functional.l1_loss(pred_latents.float(), latents[rows].float())
        flat = lambda x: torch.nn.functional.normalize(x.reshape(-1, x.shape[-1]).float(), dim=-1)  # noqa: E731
        aux, teacher_aug = distributed.gather(aux), distributed.gather(teacher_aug)   # contrastive: global batch
        return l1, losses.soft_cont_loss(flat(aux), flat(teacher), flat(teacher_aug), temp=0.2)


def steps_per_epoch(data: TrainData, tc: TrainConfig) -> int:
    """Upstream's number of steps: ``samples_per_epoch // batch_size`` (750 x sessions, or 750 x 40
    for multi-subject, over the global batch); without it, one pass over the smallest subject."""
    if data.samples_per_epoch is None:
        return min(len(s.voxels) // (tc.batch_size // len(data.subjects)) for s in data.subjects)
    return data.samples_per_epoch // tc.batch_size


def epoch_batches(data: TrainData, tc: TrainConfig, epoch: int) -> tuple[list[list[np.ndarray]], int]:
    """Per global step, the trial indices of each subject, and how many shares were drawn again;
    reproducible from (seed, epoch).

    Each subject's share of a step is the next ``batch_size / subjects`` trials of back-to-back
    permutations of its train trials (upstream samples with replacement), so every trial is seen
    about equally often. A share that holds an image twice is drawn again, as upstream's loop
    ``continue``s to its loader's next batch (HDF5 cannot read an image twice in one call there):
    the epoch keeps its ``steps_per_epoch`` steps."""
    per_subject, steps = tc.batch_size // len(data.subjects), steps_per_epoch(data, tc)
    rng = np.random.default_rng([tc.seed, epoch])
    shares, redrawn = [], 0
    for s in data.subjects:
        if len(np.unique(s.image_ids)) < per_subject:
            raise ValueError(f"subject {s.subject}: {len(np.unique(s.image_ids))} train images, fewer than its "
                             f"{per_subject} per batch (batch_size {tc.batch_size}): no batch without repeats")
        stream, drawn = _shares(rng, len(s.voxels), per_subject), []
        while len(drawn) < steps:
            idx = next(stream)
            if len(np.unique(s.image_ids[idx])) < per_subject:
                redrawn += 1
                if redrawn > 100 * steps + 1000:
                    raise ValueError(f"subject {s.subject}: batches of {per_subject} almost never hold distinct "
                                     "images; lower batch_size")
                continue
            drawn.append(idx)
        shares.append(drawn)
    return [list(step) for step in zip(*shares)], redrawn


def _shares(rng: np.random.Generator, n: int, size: int):
    """Consecutive ``size``-trial slices of back-to-back permutations of ``range(n)``, endlessly."""
    buf = np.empty(0, np.int64)
    while True:
        while len(buf) < size:
            buf = np.concatenate([buf, rng.permutation(n)])
        yield buf[:size]
        buf = buf[size:]


def micro_batches(data: TrainData, batch: list[np.ndarray], tc: TrainConfig, device, mixup: bool,
                  seeds: list[list[int]]):
    """Split a global batch into ``grad_accum`` micro-batches, each as the LossModel's arguments:
    (voxels, subj_idx, targets, mix, low, rows, noise_seed). ``seeds[m]``: micro-batch m's
    (mixup, prior noise) seeds; ``low`` = (latent targets, teacher features, this rank's images)
    with the blurry branch, else None (fmri_recon.train.distributed: who holds what)."""
    for m in range(tc.grad_accum):
        parts = [idx[m::tc.grad_accum] for idx in batch]
        rows = distributed.rank_rows(sum(len(p) for p in parts))
        voxels, subj_idx, mixes, offset = [], [], [], 0
        with torch.random.fork_rng(devices=[]):       # BiMixCo's draws: the same on every rank
            torch.manual_seed(seeds[m][0])
            for k, (subj, part) in enumerate(zip(data.subjects, parts)):
                v = subj.voxels[part].float()[:, None]
                if mixup:
                    v, perm, beta, select = losses.mixco(v)
                    mixes.append((perm + offset, beta, select))
                lo, hi = max(rows.start - offset, 0), min(rows.stop - offset, len(part))
                if lo < hi:                            # this rank's rows of subject k
                    voxels.append(v[lo:hi].to(device)), subj_idx.append(k)
                offset += len(part)
        mix = tuple(torch.cat(x).to(device) for x in zip(*mixes)) if mixup else None
        trows = torch.cat([s.target_index[p] for s, p in zip(data.subjects, parts)])
        low = None
        if data.lowlevel is not None:
            ll, ids = data.lowlevel, np.concatenate([s.image_ids[p] for s, p in zip(data.subjects, parts)])
            low = (ll.latents[trows].float().to(device), ll.teacher[trows].float().to(device),
                   ll.images_of(ids[rows]).float().to(device))
        yield voxels, subj_idx, data.targets[trows].float().to(device), mix, low, rows, seeds[m][1]


def prepare(model: MindEyeModel, tc: TrainConfig, steps_per_epoch: int, ckpt: dict | None, out_dir: Path):
    """(accelerator, loss model, optimizer, scheduler), prepared and, with ``ckpt``, resumed."""
    optimizer = torch.optim.AdamW(param_groups(model), lr=tc.max_lr)
    scheduler = make_scheduler(optimizer, tc, tc.num_epochs * steps_per_epoch)
    accelerator = make_accelerator(tc, micro_batch=tc.batch_size // tc.grad_accum)
    deepspeed = uses_deepspeed(accelerator)
    if ckpt is not None and not deepspeed:
        model.load_state_dict(ckpt["model_state_dict"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        scheduler.load_state_dict(ckpt["lr_scheduler"])
    loss_model, optimizer, scheduler = accelerator.prepare(LossModel(model, tc), optimizer, scheduler)
    if ckpt is not None and deepspeed:   # weights, fp32 master weights and Adam state: the engine's files
        loss_model.load_checkpoint(str(out_dir / DEEPSPEED_DIR), tag=ckpt["deepspeed_tag"], load_module_strict=True)
        scheduler.load_state_dict(ckpt["lr_scheduler"])
        for group, saved in zip(optimizer.param_groups, ckpt["optimizer_hyperparameters"]):
            group.update(saved)          # the engine restores Adam's state, not the scheduled lr and betas
    if ckpt is not None:
        set_rng_state(ckpt["rng"])
    rank_rng_state(ckpt, tc.seed, ckpt["epoch"] if ckpt else 0)
    return accelerator, loss_model, optimizer, scheduler


def train_epoch(data: TrainData, tc: TrainConfig, epoch: int, parts, mixup: bool, temp: float, teacher_aug):
    """One pass over the epoch's batches: (mean loss of each kind, optimizer steps, shares drawn again)."""
    from tqdm import tqdm

    accelerator, loss_model, optimizer, scheduler = parts
    sums, done = {k: 0.0 for k in losses.LOSSES}, 0
    batches, redrawn = epoch_batches(data, tc, epoch)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{tc.num_epochs}", unit="step", disable=not distributed.is_main())
    for step, batch in enumerate(bar):
        seeds = [distributed.step_seeds(tc.seed, epoch, step, m) for m in range(tc.grad_accum)]
        for voxels, subj_idx, targets, mix, low, rows, noise_seed in micro_batches(
                data, batch, tc, accelerator.device, mixup, seeds):
            if low is not None:
                low = (low[0], low[1], teacher_aug(low[2]))
            with accelerator.accumulate(loss_model):
                out = loss_model(voxels, subj_idx, targets, mix, temp, low, rows, noise_seed)
                if not torch.isfinite(out["total"]):
                    raise FloatingPointError(f"loss is {out['total'].item()} at epoch {epoch + 1}, batch {step}")
                accelerator.backward(out["total"])
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            for k in sums:
                sums[k] += float(out[k].detach()) / tc.grad_accum
        done += 1
    means = distributed.mean_over_ranks({k: v / max(done, 1) for k, v in sums.items()}, accelerator.device)
    return means, done, redrawn


def check_inputs(data: TrainData, brain_cfg: BrainConfig, tc: TrainConfig, teacher) -> None:
    """Refuse a run that cannot train, and warn of one that trains unlike upstream, before any work."""
    if brain_cfg.blurry_recon and (data.lowlevel is None or teacher is None):
        raise ValueError("blurry_recon: true needs the low-level targets and the ConvNeXt teacher "
                         "(the lowlevel_targets stage and lowlevel.teacher)")
    per_subject, n = tc.batch_size // len(data.subjects), len(data.subjects)
    micro = [len(range(m, per_subject, tc.grad_accum)) * n for m in range(tc.grad_accum)]
    if any(rows % tc.num_processes for rows in micro):
        raise ValueError(f"batch_size {tc.batch_size} ({per_subject} x {n} subjects, grad_accum {tc.grad_accum}): "
                         f"micro-batches of {micro} rows cannot be shared evenly by num_processes {tc.num_processes}")
    if tc.grad_accum > 1:
        log.warning("grad_accum %d: the contrastive losses see micro-batches of %d, not the global batch of %d "
                    "(fewer negatives than upstream)", tc.grad_accum, tc.batch_size // tc.grad_accum, tc.batch_size)


def count_steps(data: TrainData, tc: TrainConfig) -> int:
    """Optimizer steps per epoch (the scheduler's span needs it), refusing an epoch of none."""
    steps = steps_per_epoch(data, tc)
    if steps == 0:
        raise ValueError(f"batch_size {tc.batch_size} is larger than the train set of a subject")
    return steps


def epoch_regimes(tc: TrainConfig) -> list[tuple[bool, float]]:
    """Per epoch, (BiMixCo?, SoftCLIP temperature): mixup first, then a rising temperature."""
    mixup_epochs = int(tc.mixup_pct * tc.num_epochs)
    temps = losses.cosine_anneal(0.004, 0.0075, tc.num_epochs - mixup_epochs)
    return [(True, 0.006) if epoch < mixup_epochs else (False, temps[epoch - mixup_epochs])
            for epoch in range(tc.num_epochs)]


def train_and_validate(data: TrainData, brain_cfg: BrainConfig, tc: TrainConfig, epoch: int, parts,
                       regime: tuple[bool, float], teacher_aug, progress: Progress) -> tuple[dict, dict]:
    """One epoch trained and validated: (its log row, the validation part of it), (None, None) on
    ranks but 0; updates ``progress``."""
    accelerator, loss_model = parts[:2]
    t0 = time.perf_counter()
    mixup, temp = regime
    means, done, redrawn = train_epoch(data, tc, epoch, parts, mixup, temp, teacher_aug)
    if not distributed.is_main():    # validation and the log are rank 0's; the others wait for it
        distributed.barrier()
        return None, None
    val = validate(accelerator.unwrap_model(loss_model).model, data.subjects[0], data.targets,
                   tc.val_images, accelerator.device, accelerator.autocast,
                   data.lowlevel.latents if data.lowlevel is not None else None)
    distributed.barrier()
    progress.elapsed += time.perf_counter() - t0
    progress.peak = max(progress.peak, peak_memory_mb(accelerator.device))
    row = {"epoch": epoch + 1, "lr": parts[3].get_last_lr()[0], "mixup": int(mixup), "temp": temp,
           **{f"train_loss_{k}": v for k, v in means.items() if brain_cfg.blurry_recon or not k.startswith("blur")},
           "steps": done, "redrawn_shares": redrawn, **val, "epoch_time_s": time.perf_counter() - t0}
    return row, val


def record_epoch(row: dict, val: dict, progress: Progress, out_dir: Path, wandb) -> None:
    """An epoch's row kept everywhere it is read: the history, the log, log.csv and wandb."""
    progress.history.append(row)
    _log_epoch(row, val)
    write_log_csv(out_dir / "log.csv", progress.history)
    if wandb is not None:
        wandb.log(row)


def saves_checkpoint(epoch: int, tc: TrainConfig, stop_after: int | None) -> bool:
    """Whether last.pth is written after ``epoch``: every ``ckpt_interval`` epochs and at the job's end."""
    last = epoch + 1 == tc.num_epochs or (stop_after is not None and epoch + 1 >= stop_after)
    return (epoch + 1) % tc.ckpt_interval == 0 or last


def stops_early(epoch: int, tc: TrainConfig, stop_after: int | None) -> bool:
    """Whether ``stop_after`` ends this job after ``epoch``, before the run's last epoch."""
    return stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < tc.num_epochs


def run(data: TrainData, brain_cfg: BrainConfig, tc: TrainConfig, out_dir: str | Path, data_desc: dict,
        init_from: str | Path | None = None, stop_after: int | None = None, teacher=None) -> dict:
    """Train (or resume) into ``out_dir``: last.pth, log.csv, loss_curve.png, train_stats.json.

    ``stop_after``: return after that many epochs in total, with the checkpoint written (to
    split a long run over several jobs; the tests use it to interrupt a run).
    ``teacher``: the blurry branch's frozen ConvNeXt (fmri_recon.targets.lowlevel), with ``data.lowlevel``.
    """
    # 1. Refuse what cannot train, before any work
    check_inputs(data, brain_cfg, tc, teacher)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "last.pth"

    # 2. A checkpoint to resume, if one matches; the model, seeded
    ckpt = resume_state(ckpt_path, brain_cfg, tc, data_desc)
    model = build_model(data, brain_cfg, tc, init_from, resuming=ckpt is not None)
    steps_per_epoch = count_steps(data, tc)

    # 3. Accelerator, optimizer and scheduler; with a checkpoint, its states and RNG
    parts = prepare(model, tc, steps_per_epoch, ckpt, out_dir)
    accelerator = parts[0]
    progress = Progress.resumed(ckpt)
    counts = parameter_counts(model)
    log_start(data_desc, tc, accelerator, steps_per_epoch, progress.start, counts)

    # 4. What the epochs use besides the data: wandb, the teacher, the loss regime per epoch
    wandb = start_wandb(tc, brain_cfg, data_desc) if distributed.is_main() else None
    teacher_aug = (teacher_on_augmented(teacher, accelerator.device, accelerator.autocast)
                   if brain_cfg.blurry_recon else None)
    regimes = epoch_regimes(tc)

    # 5. Epochs: train, validate, log, checkpoint; stop early if asked
    for epoch in range(progress.start, tc.num_epochs):
        row, val = train_and_validate(data, brain_cfg, tc, epoch, parts, regimes[epoch], teacher_aug, progress)
        if row is not None:
            record_epoch(row, val, progress, out_dir, wandb)
        if saves_checkpoint(epoch, tc, stop_after):
            save_checkpoint(ckpt_path, parts, checkpoint_state(epoch, brain_cfg, tc, data_desc, progress))
        if stops_early(epoch, tc, stop_after):
            log.info("stopping after epoch %d as asked; the next run resumes from %s", epoch + 1, ckpt_path)
            return {"stopped_after": epoch + 1}

    # 6. The summary (rank 0's)
    distributed.barrier()
    if not distributed.is_main():
        return {"rank": distributed.world()[0]}
    return finish(out_dir, data_desc, tc, accelerator, counts, progress)


def _log_epoch(row: dict, val: dict) -> None:
    log.info("epoch %d: loss %.4f (prior %.4f, clip %.4f), val image->brain %.3f brain->image %.3f",
             row["epoch"], row["train_loss_total"], row["train_loss_prior"], row["train_loss_clip"],
             val["val_image_to_brain"], val["val_brain_to_image"])
    if "val_blur_l1" in val:
        log.info("epoch %d: blurry branch: train L1 %.4f, soft-cont %.4f; val L1 %.4f, 2-way %.3f", row["epoch"],
                 row["train_loss_blur_l1"], row["train_loss_blur_cont"], val["val_blur_l1"], val["val_blur_2way"])


