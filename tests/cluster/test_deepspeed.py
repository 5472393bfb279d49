"""Training under DeepSpeed ZeRO-2 with CPU optimizer offload and bf16 weights, on the CPU.

DeepSpeed keeps the weights in bf16 and does not autocast, so every input must be cast to the
weights' dtype (an fp32 input raised "mat1 and mat2 must have the same dtype" in training and
validation). Each run is its own process (tests/support/run_training.py), as a real job is.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmri_recon.train import checkpoint

JOB = Path(__file__).parents[1] / "support" / "run_training.py"


def run_job(out: Path, *args: str) -> tuple[dict, str]:
    result = subprocess.run([sys.executable, str(JOB), str(out), "--deepspeed", *args], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):]), result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 6-epoch run in two jobs: stopped after epoch 2, then resumed."""
    root = tmp_path_factory.mktemp("deepspeed")
    stopped, _ = run_job(root / "split", "--stop-after", "2")
    first = checkpoint.read(root / "split/last.pth")
    resumed, said = run_job(root / "split")
    return {"root": root, "stopped": stopped, "first": first, "resumed": resumed, "said": said}


def test_deepspeed_run_learns(runs):
    stats = runs["resumed"]
    assert stats["deepspeed"] is True and stats["precision"] == "bf16"
    history = checkpoint.read(runs["root"] / "split/last.pth")["history"]
    assert history[-1]["train_loss_total"] < 0.75 * history[0]["train_loss_total"]
    # held out: the contrastive loss on the 10 test images (their top-1 retrieval is too coarse to
    # tell: one image is 0.1); 38 -> 15 when it learns
    assert history[-1]["val_loss_clip"] < 0.6 * history[0]["val_loss_clip"]


def test_deepspeed_checkpoint_holds_fp32_weights_and_loads_strictly(runs):
    ckpt = runs["first"]
    assert runs["stopped"] == {"stopped_after": 2} and ckpt["epoch"] == 2 and ckpt["deepspeed_tag"] == "epoch0002"
    assert ckpt["optimizer_state_dict"] is None                   # DeepSpeed's own files hold it
    model, final = checkpoint.load_model(runs["root"] / "split/last.pth")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert [p.name for p in (runs["root"] / "split/deepspeed").iterdir() if p.is_dir()] == [final["deepspeed_tag"]]


def test_deepspeed_run_resumes_from_its_checkpoint(runs):
    """It goes on from epoch 3 with the first job's history (ZeRO-Offload does not resume bit for
    bit, unlike the default regime: test_train.py)."""
    assert "resuming from" in runs["said"] and "after epoch 2" in runs["said"]
    assert "epoch 1:" not in runs["said"]                          # not from scratch
    resumed = checkpoint.read(runs["root"] / "split/last.pth")["history"]
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4, 5, 6] and resumed[:2] == runs["first"]["history"]
    assert resumed[-1]["train_loss_total"] < 0.75 * resumed[1]["train_loss_total"]
