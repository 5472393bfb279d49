"""Training samples/s in 1 and in N processes (torchrun; gloo on a CPU, NCCL on GPUs), A B A B.

    python bench/bench_distributed.py                     # demo size, 1 vs 2 processes
    python bench/bench_distributed.py --processes 4 -- --hidden-dim 1024 --seq 256 --emb 1664 --voxels 15724 --precision bf16

Each run is bench/bench_train.py --json under torchrun at the same global batch (arguments after
``--`` go to it); samples/s is its warmed-up second epoch, validation included. The ranks share
the machine's cores (OMP_NUM_THREADS = cores / processes). Prints each run and the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).with_name("bench_train.py")


def one_run(processes: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
           str(BENCH), "--json", *extra]
    threads = max((os.cpu_count() or 1) // processes, 1)      # the same cores in all, shared by the ranks
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2, help="B: this many processes (A: 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("extra", nargs="*", help="bench_train.py arguments")
    args = ap.parse_args()
    runs: dict[int, list[float]] = {1: [], args.processes: []}
    for r in range(args.rounds):
        for n in (1, args.processes):
            res = one_run(n, args.extra)
            runs[n].append(res["samples_per_s"])
            print(f"round {r + 1}, {n} process(es): {res['samples_per_s']:.1f} samples/s "
                  f"(epoch {res['epoch_s']:.2f} s, peak {res['peak_memory_mb']:.0f} MB on {res['device']})", flush=True)
    a, b = statistics.median(runs[1]), statistics.median(runs[args.processes])
    print(f"median: 1 process {a:.1f} samples/s, {args.processes} processes {b:.1f} samples/s (x{b / a:.2f})")


if __name__ == "__main__":
    main()
