"""The demo DAG submitted to a real single-node SLURM cluster with the project's SLURM profile.

Asserts from SLURM's own records that every GPU stage ran as a SLURM job with a GPU
allocated (the train job two GPUs and two tasks on one node, for its two ranks), that CPU
stages got none, and that tables/metrics.csv came out. The daemons
stop at the end, by pid, whatever happens (tests/support/slurm_cluster.py).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import DEMO, REPO
from slurm_cluster import SlurmCluster, available, missing_binaries

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not available(), reason=f"SLURM not installed (missing {', '.join(missing_binaries())}); "
                                               "run .ci/install-slurm.sh"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test SLURM cluster needs root"),
]
GPU_RULES = ("targets", "lowlevel_targets", "git_features", "train", "blurry", "reconstruct", "refine", "evaluate")


def test_demo_dag_runs_as_slurm_jobs_with_gpus(tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    # A smaller demo (the full one runs in the local end-to-end tests): every GPU stage once (the
    # blurry experiment has them all), less compute: random decoders, which train no job of their own.
    small = work / "small.yaml"
    small.write_text("model: {num_epochs: 2}\nsynthetic: {num_test_images: 16, trials_per_session: 300, num_images: 300}\n"
                     "decoder: {weights: random}\ncaptions: {weights: random}\nrefine: {base: random, size: 64}\n"
                     "lowlevel: {vae: random}\n"
                     "experiments: {lite_bigG: null, blurry_bigG: {num_processes: 2}}\n")   # train: 2 GPUs, 2 ranks
    with SlurmCluster(tmp_path / "slurm", gpus=2) as cluster:
        env = cluster.env()
        env.pop("CUDA_VISIBLE_DEVICES", None)              # the fake GPU comes from SLURM, not from us
        env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "snakemake", "--profile", str(REPO / "profiles/slurm"),
               "--workflow-profile", "none", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--jobs", "2", "--default-resources", "mem_mb=1500", "runtime=30",
               f"slurm_partition={cluster.partition}",
               "--set-resources", *[f"{r}:cpus_per_gpu={1 if r == 'train' else 2}" for r in GPU_RULES],
               "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--retries", "0",
               "all", "--configfile", str(DEMO), str(small)]
        t0 = time.monotonic()
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=2400)
        wall = time.monotonic() - t0
        assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
        history = cluster.jobs_history()
    print(f"demo DAG through SLURM: {wall:.0f} s, {len(history)} SLURM jobs")
    assert (work / "tables/metrics.csv").read_text().count("\n") == 5     # header + 2 stages + blurry + upper bound
    by_rule: dict[str, list] = {}
    for job in history:
        by_rule.setdefault((job["comment"] or "").split("_wildcards")[0].removeprefix("rule_"), []).append(job)
    for rule in GPU_RULES:
        jobs = by_rule.get(rule)
        assert jobs, f"no SLURM job for rule {rule}: {sorted(by_rule)}"
        gpus = 2 if rule == "train" else 1
        for job in jobs:
            assert job["state"] == "COMPLETED" and job["gpus"] == gpus and job["job_gres"] == f"gpu:{gpus}", job
    train = by_rule["train"][0]                       # one node, a task per GPU, a rank per task
    assert (train["num_tasks"], train["num_nodes"], len(set(train["gpu_ids"]))) == (2, 1, 2), train
    said = (work / "logs/train/blurry_bigG.log").read_text()
    assert "launching 2 training processes" in said and "rank 1 INFO fmri_recon.train: training" in said
    assert len(by_rule["train"]) == 1 and len(by_rule["reconstruct"]) == 2 and len(by_rule["blurry"]) == 1
    for job in by_rule["check_data"] + by_rule["random_lowlevel"] + by_rule["metrics_table"] + by_rule["results"]:
        assert job["gpus"] == 0 and job["job_gres"] is None, job
    assert not any(cluster.alive().values())
