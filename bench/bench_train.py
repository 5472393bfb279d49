"""Benchmark of the train stage: samples/s and peak memory of a config, parameter counts.

    python bench/bench_train.py                      # demo-sized model on the demo data
    python bench/bench_train.py --lite               # upstream's lite config: parameter counts only
    python bench/bench_train.py --hidden-dim 1024 --seq 256 --emb 1664 --voxels 15724 --steps 5
    python bench/bench_train.py --blurry tiny        # with the blurry branch (tiny | xlarge teacher)
    torchrun --standalone --nproc-per-node 2 bench/bench_train.py --json   # 2 ranks (bench_distributed.py)

Synthetic voxels and targets of the requested shapes (timing does not depend on values);
the run goes through fmri_recon.train.loop.run, so it measures the real training step.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch


def lite_counts() -> dict:
    from fmri_recon.models import BrainConfig, MindEyeModel, parameter_counts

    cfg = BrainConfig(num_voxels=[15724], hidden_dim=1024, clip_seq_dim=256, clip_emb_dim=1664,
                      blurry_recon=False, prior_dim_head=52)
    with torch.device("meta"):
        model = MindEyeModel(cfg)
    return parameter_counts(model)


def bench(args) -> dict:
    from fmri_recon.train import loop
    from fmri_recon.models import BrainConfig
    from fmri_recon.train.dataset import ImagesInMemory, LowLevelData, SubjectData, TrainData

    n = args.batch_size * args.steps
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(n + 8, args.seq, args.emb, generator=g).half()
    subj = SubjectData(1, torch.randn(n, args.voxels, generator=g).half(), torch.arange(8, n + 8),
                       np.arange(8, n + 8), torch.randn(8, 3, args.voxels, generator=g).half(), torch.arange(8),
                       np.arange(8))
    cfg = BrainConfig(num_voxels=[args.voxels], hidden_dim=args.hidden_dim, n_blocks=4, clip_seq_dim=args.seq,
                      clip_emb_dim=args.emb, prior_depth=args.prior_depth, prior_dim_head=args.prior_dim_head,
                      blurry_recon=args.blurry is not None)
    data, teacher = TrainData([subj], targets, np.arange(n + 8)), None
    if args.blurry:
        from fmri_recon.targets import lowlevel

        teacher = lowlevel.build_teacher(tiny=args.blurry == "tiny").eval().requires_grad_(False)
        data.lowlevel = LowLevelData(torch.randn(n + 8, 4, 28, 28, generator=g).half(),
                                     torch.randn(n + 8, 49, 512, generator=g).half(),
                                     ImagesInMemory(np.arange(n + 8), torch.rand(n + 8, 3, 224, 224, generator=g).half()))
    tc = loop.TrainConfig(num_epochs=2, batch_size=args.batch_size, grad_accum=args.grad_accum,
                           precision=args.precision, ckpt_interval=100, val_images=8, device=args.device,
                           deepspeed_offload=args.deepspeed, mixup_pct=0.5,
                           num_processes=int(os.environ.get("WORLD_SIZE", 1)))   # under torchrun: its ranks
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stats = loop.run(data, cfg, tc, tmp, {"bench": True}, teacher=teacher)
        wall = time.perf_counter() - t0
    if "final" not in stats:                          # a rank but 0 of a torchrun launch
        return None
    epoch_s = stats["final"]["epoch_time_s"]          # the second epoch: warmed up; includes validation
    return {"samples_per_s": n / epoch_s, "epoch_s": epoch_s, "run_s": wall,
            "peak_memory_mb": stats["peak_memory_mb"], "device": stats["device"], "params": stats["params"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lite", action="store_true", help="print the lite config's parameter counts and exit")
    ap.add_argument("--hidden-dim", type=int, default=256)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--emb", type=int, default=64)
    ap.add_argument("--voxels", type=int, default=600)
    ap.add_argument("--prior-depth", type=int, default=1)
    ap.add_argument("--prior-dim-head", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--deepspeed", action="store_true")
    ap.add_argument("--blurry", choices=["tiny", "xlarge"], help="with the blurry branch and this ConvNeXt teacher")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line (bench_distributed.py)")
    args = ap.parse_args()
    if args.json:
        result = bench(args)
        if result is not None:
            print("RESULT " + json.dumps(result), flush=True)
        return
    counts = lite_counts()
    print("lite config (h=1024, bigG 256x1664, no blurry, V=15724): " +
          ", ".join(f"{k} {v:,}" for k, v in counts.items()) + f"  (total {counts['total'] / 1e6:.1f} M trainable)")
    if args.lite:
        return
    result = bench(args)
    print(f"train step on {result['device']} ({args.precision}): {result['samples_per_s']:.1f} samples/s, "
          f"epoch {result['epoch_s']:.2f} s, peak memory {result['peak_memory_mb']:.0f} MB, params {result['params']}")


if __name__ == "__main__":
    main()
