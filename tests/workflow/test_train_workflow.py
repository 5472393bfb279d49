"""The train stage in the workflow: the demo learns, checkpoints load, a killed job resumes."""
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import DEMO, MORE, REPO
from conftest import DEMO_TEST_IMAGES as N
from fmri_recon.train import checkpoint

EXPERIMENTS = ("lite_bigG", "seed_vitb32", "blurry_bigG")      # the README demo's and tests/support/demo_more.yaml's
EPOCHS = yaml.safe_load(DEMO.read_text())["model"]["num_epochs"]


@pytest.mark.e2e
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_demo_experiment_learns_far_above_chance(request, name):
    run = request.getfixturevalue("demo_more_run" if "vitb32" in name else "demo_run")
    rows = list(csv.DictReader(open(run / f"train_logs/{name}/log.csv")))
    assert len(rows) == EPOCHS
    last = rows[-1]
    chance = 1 / int(last["val_images"])
    assert int(last["val_images"]) == N
    assert float(last["val_image_to_brain"]) >= 10 * chance, last
    assert float(last["val_brain_to_image"]) >= 10 * chance, last
    assert float(last["train_loss_total"]) < float(rows[0]["train_loss_total"])


@pytest.mark.e2e
def test_demo_checkpoint_and_stats(demo_run):
    model, ckpt = checkpoint.load_model(demo_run / "train_logs/blurry_bigG/last.pth")
    assert model.cfg.blurry_recon and model.cfg.clip_seq_dim == 256 and ckpt["epoch"] == EPOCHS
    assert model.cfg.num_voxels == [600]                               # read from the data
    stats = json.loads((demo_run / "train_logs/lite_bigG/train_stats.json").read_text())
    assert stats["params"]["total"] == sum(stats["params"][k] for k in ("ridge", "backbone", "prior"))
    assert stats["wall_time_s"] > 0 and stats["peak_memory_mb"] > 100 and stats["device"] == "cpu"
    assert (demo_run / "train_logs/lite_bigG/loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (demo_run / "benchmarks/train/lite_bigG.tsv").exists()


def job_pids(session: int, marker: str) -> list[int]:
    """Processes of a Snakemake run (its session) whose command line mentions ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().decode(errors="replace")
            if entry.isdigit() and os.getsid(int(entry)) == session and marker in cmd:
                pids.append(int(entry))
        except (OSError, ProcessLookupError):
            continue
    return pids


@pytest.mark.e2e
def test_killed_training_job_resumes_from_its_checkpoint(demo_more_run, tmp_path):
    """The training process dies mid-run (as a preempted SLURM job); Snakemake's retry resumes it."""
    work = tmp_path / "run"
    shutil.copytree(demo_more_run, work, ignore=shutil.ignore_patterns("train_logs", "logs", "benchmarks"))
    overrides = {"experiments": {"seed_vitb32": {"num_epochs": 60, "ckpt_interval": 5}}}
    (work / "overrides.yaml").write_text(json.dumps(overrides))
    ckpt = work / "train_logs/seed_vitb32/last.pth"
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
           "--cores", "2", "--retries", "1", "train_logs/seed_vitb32/train_stats.json", "--configfile", str(DEMO),
           str(MORE), str(work / "overrides.yaml")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        victims = job_pids(proc.pid, "train.py")
        assert victims, "no training process found"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out[-3000:]
    assert "Trying to restart job" in out or "restart" in out.lower()
    log = (work / "logs/train/seed_vitb32.log").read_text()
    resumed = re.search(r"resuming from train_logs/seed_vitb32/last.pth after epoch (\d+)", log)
    assert resumed and 5 <= int(resumed.group(1)) < 60, log[-2000:]
    assert "epoch 1:" not in log                                         # not from scratch
    done = checkpoint.read(ckpt)
    assert done["epoch"] == 60 and len(done["history"]) == 60
    assert (work / "train_logs/seed_vitb32/train_stats.json").exists()
