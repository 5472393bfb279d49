"""Peak memory of the training step at the real sizes, measured on the CPU, fitted over the batch.

    python bench/bench_memory.py                         # lite and seed models, both regimes, batches 2 and 4
    python bench/bench_memory.py --models lite --regimes autocast --batches 1 2 3
    python bench/bench_memory.py --one lite autocast 2   # one measurement (what the sweep runs per process)
    python bench/bench_memory.py --models paper --regimes autocast --hiddens 256 512   # paper_1hour.yaml

The peak RSS of a CPU process running the same computation in the same precision regime
(weights, gradients, optimizer state, activations) approximates the GPU memory of that step
(docs/costs_and_memory.md). Each measurement is a fresh process going through the train
stage's own code (``runtime.build_model``, ``loop.prepare``, ``loop.train_epoch``) on random
voxels and targets of the real shapes; the process's memory before the model exists is
subtracted. Regimes:

- ``autocast``: fp32 weights, gradients and AdamW state, bf16 autocast: all of it on the GPU.
- ``deepspeed``: DeepSpeed ZeRO-2, bf16 weights and gradients on the GPU, fp32 master weights,
  fp32 gradients and Adam state offloaded to the CPU (16 bytes per parameter, subtracted
  for the GPU figure; host-side copies the engine makes on a CPU still count, so this figure
  is an upper bound).

The default batch (24) does not fit this machine's memory in every regime, so two small
batches are measured and the line through them predicts the rest. The paper's model (hidden
4096 with the blurry branch: 2.2 B parameters, 36 GB of offloaded state alone) does not fit it
at all: with ``--hiddens`` it is measured in the autocast regime (everything on the card, so the
RSS is a faithful proxy) at smaller hidden widths, blurry branch and real-size ConvNeXt-XL
teacher included, and the plane through (parameters, batch) predicts hidden 4096 at 24: as
measured, and with ZeRO-2 offload, whose fp32 weights, gradients and Adam state (16 bytes per
parameter) live on the host: from bf16 weights and gradients on the card (4 bytes per parameter;
DeepSpeed's own estimate counts 2) up to everything measured per parameter but those 16 bytes,
activations, the teacher and the constant part as measured.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {   # the config's experiments at the real sizes (subject 1: 15724 voxels)
    "lite": dict(hidden_dim=1024, clip_seq_dim=256, clip_emb_dim=1664, prior_dim_head=52),
    "seed": dict(hidden_dim=1024, clip_seq_dim=49, clip_emb_dim=768, prior_dim_head=52),
    "paper": dict(hidden_dim=4096, clip_seq_dim=256, clip_emb_dim=1664, prior_dim_head=52, blurry_recon=True),
}
VOXELS = 15724


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


OFFLOADED_BYTES_PER_PARAM = 16      # ZeRO-Offload: fp32 master + fp32 gradient + Adam m and v
ON_CARD_BYTES_PER_PARAM = 4         # ZeRO-Offload's model state on the card: bf16 weights + bf16 gradients


def lowlevel_parts(n: int, g):
    """The blurry branch's inputs at the real sizes: cached latents and teacher features of ``n``
    images, the images, and the real-size ConvNeXt-XL teacher (random weights) on augmented ones."""
    import numpy as np
    import torch

    from fmri_recon.targets import lowlevel
    from fmri_recon.train import runtime
    from fmri_recon.train.dataset import ImagesInMemory, LowLevelData

    data = LowLevelData(torch.randn(n, 4, 28, 28, generator=g).half(), torch.randn(n, 49, 512, generator=g).half(),
                        ImagesInMemory(np.arange(n), torch.rand(n, 3, 224, 224, generator=g).half()))
    teacher = lowlevel.build_teacher(tiny=False)
    return data, teacher, runtime.teacher_on_augmented(teacher, "cpu", lambda: torch.autocast("cpu", torch.bfloat16))


def measure(model_name: str, regime: str, batch: int, steps: int = 2, checkpointing: bool = True,
            hidden: int | None = None) -> dict:
    """One measurement in this process: peak memory of ``steps`` training steps at ``batch``
    (``hidden``: the model at another hidden width)."""
    import numpy as np
    import torch

    from fmri_recon.train import loop, runtime
    from fmri_recon.models import BrainConfig, parameter_counts
    from fmri_recon.train.dataset import SubjectData, TrainData

    torch.set_num_threads(2)
    n = batch * steps
    g = torch.Generator().manual_seed(0)
    shape = (MODELS[model_name]["clip_seq_dim"], MODELS[model_name]["clip_emb_dim"])
    targets = torch.randn(n + 2, *shape, generator=g).half()
    subj = SubjectData(1, torch.randn(n, VOXELS, generator=g).half(), torch.arange(2, n + 2), np.arange(2, n + 2),
                       torch.randn(2, 3, VOXELS, generator=g).half(), torch.arange(2), np.arange(2))
    data = TrainData([subj], targets, np.arange(n + 2))
    before = rss_mb()
    shape = {**MODELS[model_name], **({"hidden_dim": hidden} if hidden else {})}
    teacher_aug = None
    if shape.get("blurry_recon"):
        data.lowlevel, _, teacher_aug = lowlevel_parts(n + 2, g)
    cfg = BrainConfig(num_voxels=[VOXELS], n_blocks=4, **shape)
    tc = loop.TrainConfig(num_epochs=20, batch_size=batch,   # one epoch of 20 runs: the scheduler needs a span
                           precision="bf16", device="cpu", mixup_pct=0.0,
                           deepspeed_offload=regime == "deepspeed", activation_checkpointing=checkpointing)
    model = runtime.build_model(data, cfg, tc, init_from=None, resuming=False)
    params = parameter_counts(model)["total"]
    parts = loop.prepare(model, tc, steps, None, Path("unused"))
    loop.train_epoch(data, tc, 0, parts, mixup=False, temp=0.006, teacher_aug=teacher_aug)
    peak = rss_mb() - before
    gpu = peak - (params * OFFLOADED_BYTES_PER_PARAM / 2**20 if regime == "deepspeed" else 0.0)
    return {"model": model_name, "regime": regime, "batch": batch, "params": params, "checkpointing": checkpointing,
            "hidden": cfg.hidden_dim, "peak_rss_mb": round(peak), "gpu_mb": round(gpu)}


def fit_plane(rows: list[dict], params: int, at: int) -> tuple[float, float, float, float]:
    """(MB at 0, MB per parameter, MB per sample, predicted MB at ``params`` and batch ``at``) of
    the plane through measurements at several widths and batches."""
    import numpy as np

    a = np.array([[1.0, r["params"], r["batch"]] for r in rows])
    m = np.array([r["gpu_mb"] for r in rows], float)
    (c0, per_param, per_sample), *_ = np.linalg.lstsq(a, m, rcond=None)
    return c0, per_param, per_sample, c0 + per_param * params + per_sample * at


def fit(rows: list[dict], at: int) -> tuple[float, float, float]:
    """(memory at batch 0, per sample, predicted at ``at``) of the line through the measurements (MB)."""
    import numpy as np

    b = np.array([r["batch"] for r in rows], float)
    m = np.array([r["gpu_mb"] for r in rows], float)
    slope, intercept = np.polyfit(b, m, 1)
    return intercept, slope, intercept + slope * at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "REGIME", "BATCH"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--regimes", nargs="+", default=["autocast", "deepspeed"])
    ap.add_argument("--batches", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--at", type=int, default=24, help="batch to predict (the config's default)")
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--hiddens", nargs="+", type=int, help="measure at these hidden widths, predict the model's own")
    ap.add_argument("--hidden", type=int, help=argparse.SUPPRESS)       # one measurement's width
    args = ap.parse_args()
    if args.one:
        name, regime, batch = args.one
        print("RESULT " + json.dumps(measure(name, regime, int(batch), checkpointing=not args.no_checkpointing,
                                             hidden=args.hidden)))
        return
    if args.hiddens:
        return predict_over_widths(args)
    print(f"| model | regime | params | batch -> GPU MB (CPU peak RSS MB) | per sample MB | predicted at {args.at} |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        for regime in args.regimes:
            rows = [run_one(name, regime, batch, args) for batch in args.batches]
            base, per, pred = fit(rows, args.at)
            cells = ", ".join(f"{r['batch']} -> {r['gpu_mb']:,} ({r['peak_rss_mb']:,})" for r in rows)
            print(f"| {name} | {regime} | {rows[0]['params'] / 1e6:.1f} M | {cells} | {per:,.0f} | "
                  f"{pred / 1024:.1f} GB |", flush=True)


def run_one(name: str, regime: str, batch: int, args, hidden: int | None = None) -> dict:
    """One measurement in a fresh process (the peak RSS is the process's)."""
    cmd = [sys.executable, __file__, "--one", name, regime, str(batch)]
    cmd += ["--no-checkpointing"] if args.no_checkpointing else []
    cmd += ["--hidden", str(hidden)] if hidden else []
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def predict_over_widths(args) -> None:
    """Each model at ``--hiddens`` x ``--batches``; the plane through them at its own width and ``--at``."""
    from fmri_recon.models import BrainConfig, MindEyeModel, parameter_counts

    print(f"| model | regime | measured (hidden, batch -> GPU MB) | bytes per param | MB per sample | "
          f"params | predicted at {args.at} | with ZeRO-2 offload |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        import torch

        with torch.device("meta"):
            params = parameter_counts(MindEyeModel(BrainConfig(num_voxels=[VOXELS], n_blocks=4,
                                                               **MODELS[name])))["total"]
        for regime in args.regimes:
            rows = [run_one(name, regime, b, args, h) for h in args.hiddens for b in args.batches]
            c0, per_param, per_sample, pred = fit_plane(rows, params, args.at)
            rest = c0 + per_sample * args.at
            low = rest + params * ON_CARD_BYTES_PER_PARAM / 2**20
            high = rest + params * (per_param - OFFLOADED_BYTES_PER_PARAM / 2**20)
            cells = ", ".join(f"{r['hidden']}, {r['batch']} -> {r['gpu_mb']:,}" for r in rows)
            print(f"| {name} | {regime} | {cells} | {per_param * 2**20:,.1f} | {per_sample:,.0f} | "
                  f"{params / 1e9:.2f} B | {pred / 1024:.1f} GB | {low / 1024:.1f}-{high / 1024:.1f} GB |", flush=True)


if __name__ == "__main__":
    main()
