"""One tiny training job as its own process, as a real job is: DeepSpeed and torch.distributed
initialise once per process. Run it with python (one process) or under torchrun (several):

    python tests/support/run_training.py OUT_DIR [--deepspeed] [--epochs N] [--stop-after N] [--kill-rank R --kill-epoch E]

``--kill-rank R --kill-epoch E``: rank R kills itself (SIGKILL) when epoch E starts, as a lost
node or an out-of-memory kill would.
"""
import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fmri_recon.train import loop  # noqa: E402
from tiny_training import fake_data, tiny_cfg, tiny_tc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--deepspeed", action="store_true")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--stop-after", type=int)
    ap.add_argument("--kill-rank", type=int)
    ap.add_argument("--kill-epoch", type=int)
    args = ap.parse_args()
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    logging.basicConfig(level=logging.INFO, format=f"rank {rank} %(levelname)s %(name)s: %(message)s")
    if args.kill_rank == rank:
        epoch_of = loop.train_epoch

        def train_epoch(data, tc, epoch, *rest):
            if epoch + 1 == args.kill_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return epoch_of(data, tc, epoch, *rest)
        loop.train_epoch = train_epoch
    if args.deepspeed:   # as test_deepspeed has always run it: one subject, bf16 weights, offload
        data, cfg = fake_data(), tiny_cfg(clip_exclude_mean=True)
        tc = tiny_tc(num_epochs=args.epochs, ckpt_interval=2, max_lr=1e-2, precision="bf16", deepspeed_offload=True,
                     num_processes=world)
    else:   # two subjects (4 trials each per step), no dropout: 1 and 2 processes agree; the
            # residual MLP, whose weights all get real gradients (upstream's mixer has dead ones, whose
            # float-noise gradients Adam turns into lr-sized steps that differ with any summation order)
        data, cfg = fake_data(voxels=(30, 24)), tiny_cfg(voxels=(30, 24), drop=0.0, prior_cond_drop_prob=0.0,
                                                              backbone="residual_mlp")
        tc = tiny_tc(num_epochs=args.epochs, ckpt_interval=1, max_lr=1e-2, mixup_pct=0.34, num_processes=world)
    stats = loop.run(data, cfg, tc, args.out_dir, {"subjects": [1, 2] if not args.deepspeed else [1]},
                      stop_after=args.stop_after)
    print("RESULT " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
