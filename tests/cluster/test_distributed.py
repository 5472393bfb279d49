"""Training in several processes (torchrun, gloo on the CPU), through fmri_recon.train.distributed.launch
as rule train runs it: 2 processes train the same model as 1 at the same global batch; DeepSpeed
ZeRO-2 trains and resumes in 2; a rank that dies fails the job quickly and the rerun resumes."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fmri_recon.train import checkpoint, distributed

JOB = Path(__file__).parents[1] / "support" / "run_training.py"
LOSSES = ("train_loss_total", "train_loss_prior", "train_loss_clip", "val_loss_clip")


def one_process(out: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, str(JOB), str(out), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]


def two_processes(out: Path, *args: str) -> str:
    """Run the job in 2 ranks with our launcher; what they logged (appended to out/job.log)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "job.log"
    before = log.stat().st_size if log.exists() else 0
    distributed.launch([str(JOB), str(out), *args], 2, log, threads=2)
    return log.read_text()[before:]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    one_process(root / "one", "--epochs", "3")
    said = two_processes(root / "two", "--epochs", "3")
    return root, said


def test_two_processes_train_the_model_one_process_trains(ddp):
    """Same global batch (8: 4 trials of each of 2 subjects), BiMixCo in epoch 1, SoftCLIP after,
    validation after every epoch: the losses agree to 1e-5 and every weight to 1e-4 (relative),
    which only holds if the contrastive loss sees the gathered global batch, the ranks split it
    without overlap, the mixup and prior noise agree and the scheduler steps once per step."""
    root, said = ddp
    one, two = checkpoint.read(root / "one/last.pth"), checkpoint.read(root / "two/last.pth")
    assert len(one["history"]) == len(two["history"]) == 3 and one["history"][0]["mixup"] == 1
    for a, b in zip(one["history"], two["history"]):
        for k in LOSSES:
            assert b[k] == pytest.approx(a[k], rel=1e-5), (a["epoch"], k)
        assert (a["val_image_to_brain"], a["lr"]) == (b["val_image_to_brain"], pytest.approx(b["lr"]))
    for k, w in one["model_state_dict"].items():
        diff = (two["model_state_dict"][k].float() - w.float()).norm() / (w.float().norm() + 1e-12)
        assert diff < 1e-4, k
    assert one["history"][-1]["train_loss_total"] < 0.8 * one["history"][0]["train_loss_total"]   # it learns
    assert len(two["rng_ranks"]) == 2 and two["rng_ranks"][0] != two["rng_ranks"][1]   # own dropout streams


def test_only_rank_zero_writes_and_logs(ddp):
    root, said = ddp
    assert "rank 1 INFO fmri_recon.train: training" in said and "rank 1 INFO fmri_recon.train: epoch" not in said
    assert "rank 0 INFO fmri_recon.train: epoch 3:" in said
    assert len((root / "two/log.csv").read_text().splitlines()) == 4
    assert json.loads((root / "two/train_stats.json").read_text())["epochs"] == 3


def test_deepspeed_zero2_in_two_processes_trains_and_resumes(tmp_path):
    out = tmp_path / "ds"
    two_processes(out, "--deepspeed", "--epochs", "4", "--stop-after", "2")
    first = checkpoint.read(out / "last.pth")
    assert first["epoch"] == 2 and first["deepspeed_tag"] == "epoch0002"
    shards = sorted(p.name for p in (out / "deepspeed/epoch0002").glob("*optim_states.pt"))
    assert len(shards) == 2                               # ZeRO-2: each rank holds half the optimizer
    said = two_processes(out, "--deepspeed", "--epochs", "4")
    assert "resuming from" in said and "after epoch 2" in said and "epoch 1:" not in said
    final = checkpoint.read(out / "last.pth")
    history = final["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and history[:2] == first["history"]
    assert history[-1]["train_loss_total"] < 0.75 * history[0]["train_loss_total"]
    model, _ = checkpoint.load_model(out / "last.pth")          # gathered fp32 weights, strictly
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_killed_rank_fails_the_job_quickly_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "killed"
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="2-process training failed"):
        two_processes(out, "--epochs", "4", "--kill-rank", "1", "--kill-epoch", "3")
    assert time.perf_counter() - t0 < 90                 # no hang: torchrun stops rank 0 (about 10 s of work)
    assert "exitcode  : -9" in (out / "job.log").read_text()          # torchrun names the killed rank
    assert checkpoint.read(out / "last.pth")["epoch"] == 2      # checkpoints every epoch; epoch 3 never ended
    said = two_processes(out, "--epochs", "4")
    assert "resuming from" in said and "after epoch 2" in said
    assert [r["epoch"] for r in checkpoint.read(out / "last.pth")["history"]] == [1, 2, 3, 4]


def test_a_batch_the_processes_cannot_share_is_refused_before_training(tmp_path):
    from tiny_training import fake_data, tiny_cfg, tiny_tc

    from fmri_recon.train import loop

    with pytest.raises(ValueError, match=r"batch_size 8 \(4 x 2 subjects, grad_accum 1\).*num_processes 3"):
        loop.run(fake_data(voxels=(30, 24)), tiny_cfg(voxels=(30, 24)), tiny_tc(num_processes=3), tmp_path, {})
    assert not any(tmp_path.iterdir())
