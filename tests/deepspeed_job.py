"""One training job under DeepSpeed ZeRO-2 (CPU optimizer offload, bf16), as its own process:
DeepSpeed initialises torch.distributed once per process, as in a real job.

    python tests/deepspeed_job.py OUT_DIR [--stop-after N]
"""
import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmri_recon import train  # noqa: E402
from test_train import fake_data, tiny_cfg, tiny_tc  # noqa: E402

EPOCHS = 6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--stop-after", type=int)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tc = tiny_tc(num_epochs=EPOCHS, ckpt_interval=2, max_lr=1e-2, precision="bf16", deepspeed_offload=True)
    stats = train.run(fake_data(), tiny_cfg(clip_exclude_mean=True), tc, args.out_dir, {"subjects": [1]},
                      stop_after=args.stop_after)
    print("RESULT " + json.dumps(stats))


if __name__ == "__main__":
    main()
