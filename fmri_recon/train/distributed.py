"""Training over several processes (GPUs) of one node: torchrun starts them, accelerate wraps the
model (DDP, or DeepSpeed ZeRO-2), and this module holds what our training adds on top.

- The global batch of a step is the same whatever the number of processes: rank ``r`` of ``W``
  takes rows ``r*B/W .. (r+1)*B/W`` of it (subjects in order, as one process would hold them).
- The contrastive losses see the whole global batch: each rank's predictions are gathered *with
  their gradient* (``torch.distributed.nn.all_gather``, as open_clip's ``gather_with_grad``).
  Every rank then computes the same global loss; the gather's backward sums the W copies'
  gradients into each rank's rows and DDP averages over ranks, which together is the gradient
  of one process's loss on the whole batch. Mean losses (prior, blurry L1) are per rank; equal
  shards make DDP's average their global mean.
- Randomness that must agree across ranks (BiMixCo's pairs and weights, the prior's timesteps
  and noise) is drawn for the whole global batch from a seed of (seed, epoch, step,
  micro-batch), and each rank takes its rows: 1 and W processes train the same model. Dropout
  is per rank (each rank its own RNG stream), as in any DDP run.

Launch: ``launch`` runs ``torchrun --standalone`` (a free rendezvous port per job, so two jobs on
one node never collide; a rank that dies makes torchrun stop the others, so the job fails instead
of hanging). ``python -m fmri_recon.train.job SPEC`` is the worker; a multi-node launcher
(``srun torchrun --nnodes ...``) can start the same worker.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a distributed run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def world_from_env() -> tuple[int, int]:
    """(rank, world size) as the launcher set them, before the process group exists."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def rank_rows(global_batch: int) -> slice:
    """This rank's rows of a global (micro-)batch of ``global_batch`` rows."""
    rank, size = world()
    share = global_batch // size
    return slice(rank * share, (rank + 1) * share)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (the global batch), differentiable."""
    if world()[1] == 1:
        return x
    import torch.distributed.nn

    return torch.cat(torch.distributed.nn.all_gather(x.contiguous()))


def mean_over_ranks(values: dict[str, float], device) -> dict[str, float]:
    """The mean over ranks of each value (epoch means of per-rank losses)."""
    if world()[1] == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return dict(zip(values, (t / world()[1]).tolist()))


def gather_objects(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    if world()[1] == 1:
        return [obj]
    out = [None] * world()[1]
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def step_seeds(seed: int, epoch: int, step: int, micro: int, n: int = 2) -> list[int]:
    """``n`` independent seeds for the shared randomness of one micro-batch (same on every rank)."""
    return [int(s) for s in np.random.SeedSequence([seed, epoch, step, micro]).generate_state(n)]


def rank_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of rank ``rank``'s own RNG stream (dropout) from ``epoch`` on."""
    return int(np.random.SeedSequence([seed, epoch, rank], spawn_key=(1,)).generate_state(1)[0])


def launch(args: list[str], num_processes: int, log_file: Path, threads: int) -> None:
    """Run ``python ARGS`` (e.g. ``-m fmri_recon.train.job SPEC``) in ``num_processes`` processes
    with torchrun; their output is appended to ``log_file``. Raises naming the log when a rank fails."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // num_processes, 1))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
           "--max-restarts=0", *args]
    with open(log_file, "a") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{num_processes}-process training failed (torchrun exit {done.returncode}); "
                           f"every rank's output is in {log_file}")
