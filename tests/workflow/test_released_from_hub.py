"""Released checkpoints and reconstructions fetched from the hub by the real config's download jobs.

The local hub (tests/support/hub_server.py) serves a dataset in the published layout (tests/support/foreign_dataset.py)
and, in upstream's file formats at tiny sizes, a ``train_logs/<model>/last.pth`` and an
``evals/<model>/`` folder. Nothing is on disk before the run: every file comes through
``huggingface_hub`` as it would from pscotti/mindeyev2.
"""
import csv
import io
import re

import pytest
import torch

import foreign_dataset
from conftest import REPO, snakemake
from fmri_recon.data import nsd
from fmri_recon.decode import reconstruct
from fmri_recon.train import dataset
from fmri_recon.models import BrainConfig, MindEyeModel
from hub_server import FakeHub
from test_workflow import foreign_config

pytestmark = pytest.mark.e2e
RELEASE = "train_logs/tiny_release/last.pth"
# The tiny architecture of every experiment here; the released file is written to fit it.
MODEL = {"hidden_dim": 32, "n_blocks": 1, "prior_depth": 1, "prior_dim_head": 64, "clip_exclude_mean": False,
         "num_epochs": 3, "batch_size": 8, "precision": "fp32", "deepspeed_offload": False, "device": "cpu",
         "activation_checkpointing": False}
ARCH = ("hidden_dim", "n_blocks", "prior_depth", "prior_dim_head", "clip_exclude_mean")
TRAINING_COLUMNS = {"experiment", "train_wall_time_s", "train_peak_memory_mb", "params_total"}


def upstream_checkpoint() -> tuple[bytes, dict]:
    """A last.pth as upstream's Train.ipynb saves it (its keys only, no config of ours), and its weights."""
    torch.manual_seed(7)
    model = MindEyeModel(BrainConfig(num_voxels=[foreign_dataset.VOXELS], clip_seq_dim=256, clip_emb_dim=64,
                                     **{k: MODEL[k] for k in ARCH}))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10)
    buf = io.BytesIO()
    torch.save({"epoch": 9, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "lr_scheduler": sched.state_dict(), "train_losses": [1.0], "test_losses": [1.0], "lrs": [1e-3]}, buf)
    return buf.getvalue(), {k: v.clone() for k, v in model.state_dict().items()}


def overlay(data_dir, experiments: dict) -> dict:
    cfg = foreign_config(data_dir)
    return {**cfg, "download": True, "model": MODEL, "refine": {**cfg["refine"], "size": 128}, "experiments": {**cfg["experiments"], **experiments},
            "captions": {"weights": "random", "converters": {"bigG": "train"}}}


def jobs_run(result) -> dict[str, int]:
    """{rule: count} of the run's job stats."""
    stats = result.stdout.split("Job stats:")[1].split("\n\n")[0] if "Job stats:" in result.stdout else \
        result.stderr.split("Job stats:")[1].split("\n\n")[0]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", stats, re.M) if m[0] != "total"}


def test_released_model_and_outputs_come_from_the_hub(tmp_path):
    nsd_dir = tmp_path / "published"
    foreign_dataset.write(nsd_dir)
    files = {str(p.relative_to(nsd_dir)): p.read_bytes() for p in nsd_dir.rglob("*") if p.is_file()}
    files[RELEASE], released = upstream_checkpoint()
    run = tmp_path / "run"
    data = run / "data"                                             # empty: the hub has it all
    experiments = {"released": {"checkpoint": f"data:{RELEASE}"}, "tuned": {"init_from": f"data:{RELEASE}"}}
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": None}
    with FakeHub(files) as hub:
        env["HF_ENDPOINT"] = hub.endpoint
        first = snakemake(run, "tables/released.csv", "train_logs/tuned/log.csv", configs=(REPO / "config.yaml",),
                          overrides=overlay(data, experiments), env=env)
        assert len(hub.gets(RELEASE)) == 1                        # one download job serves both experiments
        jobs = jobs_run(first)
        assert jobs["train"] == 1 and jobs["reconstruct"] == 1 and jobs["evaluate"] == 1, jobs
        log = (run / "logs/train/tuned.log").read_text()
        assert f"'init_from': '{data / RELEASE}'" in log, log[-2000:]     # the downloaded file
        losses = [float(r["train_loss_total"]) for r in csv.DictReader((run / "train_logs/tuned/log.csv").open())]
        assert losses[-1] < 0.9 * losses[0], losses                    # the fine-tune learns
        # the released tensors of that model, served as upstream's evals/<model>/ folder
        for kind in ("recons", "enhancedrecons", "clipvoxels", "predcaptions"):
            hub.files[f"evals/paper/paper_all_{kind}.pt"] = (run / f"evals/released/released_all_{kind}.pt").read_bytes()
        scored = {"paper": {"outputs": "data:evals/paper"}}
        second = snakemake(run, "tables/paper.csv", configs=(REPO / "config.yaml",),
                           overrides=overlay(data, {**experiments, **scored}), env=env)
    assert set(jobs_run(second)) == {"download", "released_output", "evaluate"}, jobs_run(second)
    ours = list(csv.DictReader((run / "tables/released.csv").open()))
    theirs = list(csv.DictReader((run / "tables/paper.csv").open()))
    assert [r["stage"] for r in theirs] == [r["stage"] for r in ours] == ["recon", "enhanced"]
    for a, b in zip(theirs, ours):
        assert {k: v for k, v in a.items() if k not in TRAINING_COLUMNS} == \
               {k: v for k, v in b.items() if k not in TRAINING_COLUMNS}
    # the released weights decoded the test trials (not a random model): same retrieval tokens from them
    model = MindEyeModel(BrainConfig(num_voxels=[foreign_dataset.VOXELS], clip_seq_dim=256, clip_emb_dim=64,
                                     **{k: MODEL[k] for k in ARCH}))
    model.load_state_dict(released, strict=True)
    voxels = dataset.load(data, [foreign_dataset.SUBJECT], 1, True, run / "cache/clip_targets/bigG.hdf5",
                          normalisation="all_sessions")
    want = reconstruct.brain_embeddings(model, voxels.subjects[0].test_voxels, prior_steps=2, seed=0)["clipvoxels"]
    got = nsd.load_eval(run / "evals/released", "released_all_clipvoxels.pt").float()
    assert torch.allclose(got, want, atol=2e-3, rtol=1e-2), (got - want).abs().max()
