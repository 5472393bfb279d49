"""The SLURM profile against a real single-node SLURM (one fake GPU), end to end.

Starts munged/slurmctld/slurmd (tests/support/slurm_cluster.py), runs a throwaway two-rule
workflow with ``--profile profiles/slurm`` and checks, from SLURM's own records, that
the GPU rule ran as a SLURM job with a GPU allocated and the other without one.
Skipped when SLURM is not installed (``bash .ci/install-slurm.sh`` installs it; root).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SLURM_CONF, SlurmCluster, available, missing_binaries  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm"

pytestmark = [
    pytest.mark.skipif(
        not available(),
        reason=f"SLURM not installed (missing {', '.join(missing_binaries())}); run .ci/install-slurm.sh",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the test SLURM cluster needs root"),
]

# `targets` is a GPU rule of the real workflow, so the profile's set-resources entry for
# it (cpus_per_gpu) is exercised too; `summary` is an ordinary CPU job.
SNAKEFILE = r"""
rule all:
    input: "gpu.txt", "cpu.txt"

rule targets:
    output: "gpu.txt"
    resources: gpu=1
    shell: 'echo "SLURM_JOB_ID=$SLURM_JOB_ID CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-none}}" > {output}'

rule summary:
    output: "cpu.txt"
    shell: 'echo "SLURM_JOB_ID=$SLURM_JOB_ID CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-none}}" > {output}'
"""


def _read_env_file(path: Path) -> dict:
    return dict(kv.split("=", 1) for kv in path.read_text().split())


def test_profile_runs_gpu_rule_as_slurm_job_with_gpu(tmp_path):
    t0 = time.monotonic()
    wf = tmp_path / "wf"
    wf.mkdir()
    (wf / "Snakefile").write_text(SNAKEFILE)
    had_conf = SLURM_CONF.exists()
    conf_before = SLURM_CONF.read_bytes() if had_conf else None

    cluster = SlurmCluster(tmp_path / "slurm")
    with cluster:
        pids = cluster.daemon_pids()
        assert all(cluster.alive().values()), pids
        env = cluster.env()
        env.pop("CUDA_VISIBLE_DEVICES", None)  # sbatch exports our env: don't fake a GPU
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable, "-m", "snakemake",
            "--profile", str(PROFILE), "--workflow-profile", "none",
            "--snakefile", str(wf / "Snakefile"), "--directory", str(wf),
            # test-only overrides: a tiny node (whole keys replace the profile's)
            "--default-resources", "mem_mb=200", "runtime=10", f"slurm_partition={cluster.partition}",
            "--set-resources", "targets:cpus_per_gpu=1",
            "--slurm-init-seconds-before-status-checks", "2",
            "--latency-wait", "5", "--retries", "0",
        ]
        res = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=100)
        log = f"{res.stdout[-4000:]}\n{res.stderr[-6000:]}"
        assert res.returncode == 0, log
        assert "sbatch" in res.stderr or "SLURM" in res.stderr, log

        gpu_out = _read_env_file(wf / "gpu.txt")
        cpu_out = _read_env_file(wf / "cpu.txt")
        assert gpu_out["SLURM_JOB_ID"].isdigit(), gpu_out
        assert cpu_out["SLURM_JOB_ID"].isdigit(), cpu_out
        assert gpu_out["CUDA_VISIBLE_DEVICES"] == "0", gpu_out
        assert cpu_out["CUDA_VISIBLE_DEVICES"] == "none", cpu_out

        history = {j["job_id"]: j for j in cluster.jobs_history()}
        gpu_job = history.get(gpu_out["SLURM_JOB_ID"])
        cpu_job = history.get(cpu_out["SLURM_JOB_ID"])
        assert gpu_job and cpu_job, (history, gpu_out, cpu_out)
        for job in (gpu_job, cpu_job):
            assert job["state"] == "COMPLETED", job
            assert job["partition"] == cluster.partition, job
        assert gpu_job["comment"].startswith("rule_targets"), gpu_job
        assert cpu_job["comment"].startswith("rule_summary"), cpu_job
        # allocated by SLURM: slurmd's Epilog saw SLURM_JOB_GPUS, slurmctld the job's GRES
        assert gpu_job["gpu_ids"] == ["0"] and gpu_job["gpus"] == 1, gpu_job
        assert gpu_job["job_gres"] == "gpu:1", gpu_job
        assert gpu_job["tres"]["cpu"] == "1", gpu_job  # cpus_per_gpu=1 from --set-resources
        assert cpu_job["gpus"] == 0 and cpu_job["job_gres"] is None, cpu_job
        # nothing left queued or running
        assert all(j["state"] == "COMPLETED" for j in cluster.squeue()), cluster.squeue()

    assert not any(cluster.alive().values()), cluster.daemon_pids()
    for pid in pids.values():
        assert not Path(f"/proc/{pid}/cmdline").exists() or not Path(f"/proc/{pid}/cmdline").read_bytes(), pid
    assert SLURM_CONF.exists() == had_conf
    if had_conf:
        assert SLURM_CONF.read_bytes() == conf_before
    assert time.monotonic() - t0 < 120
