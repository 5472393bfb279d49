"""Training: MindEye2's losses and schedule, a resumable run, fine-tuning, multi-subject."""
import logging

import numpy as np
import pytest
import torch

from fmri_recon import experiment
from fmri_recon.train import checkpoint, loop, losses, runtime
from fmri_recon.models import BrainConfig, MindEyeModel
from fmri_recon.train.dataset import TrainData

from tiny_training import E, S, fake_data, tiny_cfg, tiny_tc  # noqa: F401


# --------------------------------------------------------------------------- losses
def test_temperature_rises_as_upstream():
    temps = losses.cosine_anneal(0.004, 0.0075, 101)
    assert temps[0] == pytest.approx(0.004) and temps[-1] == pytest.approx(0.0075)
    assert temps[50] == pytest.approx((0.004 + 0.0075) / 2) and all(np.diff(temps) > 0)


def test_soft_clip_loss_hand_computed():
    preds = torch.eye(2)
    targs = torch.eye(2)
    # soft labels = softmax(I/1) rows = [e, 1]/(e+1); logits = I -> same distribution, both ways
    p = torch.tensor([np.e, 1.0]) / (np.e + 1)
    expected = -(p * torch.log(p)).sum()
    assert losses.soft_clip_loss(preds, targs, 1.0) == pytest.approx(float(expected), rel=1e-6)


def test_mixco_nce_without_mixing_is_clip_cross_entropy():
    g = torch.Generator().manual_seed(0)
    preds, targs = losses.flat_normalise(torch.randn(5, 7, generator=g)), losses.flat_normalise(torch.randn(5, 7, generator=g))
    perm, betas = torch.tensor([1, 2, 3, 4, 0]), torch.ones(5)
    logits = preds @ targs.T / 0.1
    ce = (torch.nn.functional.cross_entropy(logits, torch.arange(5))
          + torch.nn.functional.cross_entropy(logits.T, torch.arange(5))) / 2
    assert losses.mixco_nce(preds, targs, 0.1, perm, betas) == pytest.approx(float(ce), rel=1e-5)


@pytest.mark.parametrize("loss", ["soft_clip", "mixco_nce", "soft_cont"])
def test_contrastive_losses_under_bf16_autocast_equal_fp32(loss):
    """Logits of unit vectors at temperature .004 reach about 250, which bf16 stores in steps of 1:
    computed in fp32 inside autocast, the loss is the fp32 loss."""
    g = torch.Generator().manual_seed(0)
    targs = losses.flat_normalise(torch.randn(24, 256, 64, generator=g))
    preds = losses.flat_normalise(targs + 0.7 * torch.randn(24, 256 * 64, generator=g) / 128)
    perm, betas = torch.randperm(24, generator=g), torch.rand(24, generator=g)
    fn = {"soft_clip": lambda p, t: losses.soft_clip_loss(p, t, 0.004),
          "mixco_nce": lambda p, t: losses.mixco_nce(p, t, 0.006, perm, betas),
          "soft_cont": lambda p, t: losses.soft_cont_loss(p, t, t.flip(0), temp=0.004)}[loss]
    exact = fn(preds, targs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = fn(preds, targs)
    assert auto.dtype == torch.float32
    assert float(auto) == pytest.approx(float(exact), rel=1e-5, abs=1e-5)


def test_mixco_leaves_unselected_samples_alone():
    torch.manual_seed(3)
    v = torch.randn(64, 1, 10)
    mixed, perm, betas, select = losses.mixco(v)
    assert torch.equal(mixed[~select], v[~select]) and (betas[~select] == 1).all()
    i = int(torch.nonzero(select)[0])
    assert torch.allclose(mixed[i], betas[i] * v[i] + (1 - betas[i]) * v[perm[i]])
    assert 10 < int(select.sum()) < 54


def test_trainings_own_monitors_agree_with_the_metrics():
    """validation's top-1 and two-way are training's own (editing a metric must not retrain), and
    give what the evaluate stage's implementations give."""
    from fmri_recon.train import validation
    from fmri_recon.evaluate.metrics.image import two_way_identification
    from fmri_recon.evaluate.metrics.retrieval import topk_matches

    g = torch.Generator().manual_seed(0)
    true = torch.randn(12, 4, 7, 7, generator=g)
    pred = true + 1.5 * torch.randn(12, 4, 7, 7, generator=g)
    assert validation.two_way(true, pred) == pytest.approx(two_way_identification(true, pred), abs=1e-12)
    sim = torch.randn(12, 12, generator=g) + torch.eye(12)
    assert validation.top1(sim) == pytest.approx(float(topk_matches(sim).float().mean()))
    assert validation.top1(torch.eye(3)) == 1.0 and validation.two_way(true, true) == 1.0


def test_param_groups_cover_every_parameter_once_with_upstream_decay():
    model = MindEyeModel(tiny_cfg())
    groups = runtime.param_groups(model)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay_of[id(model.ridge.linears[0].bias)] == 0.01            # the whole ridge decays
    assert decay_of[id(model.backbone.backbone_linear.bias)] == 0.0
    assert decay_of[id(model.backbone.backbone_linear.weight)] == 0.01


def test_experiment_keys_are_config_fields():
    from dataclasses import fields
    assert set(experiment.MODEL_KEYS) <= {f.name for f in fields(BrainConfig)}
    assert set(experiment.TRAIN_KEYS) <= {f.name for f in fields(loop.TrainConfig)}


def test_epoch_has_upstreams_number_of_steps():
    data = fake_data(voxels=(30, 20, 25), n_train=690)
    data.samples_per_epoch = 750 * 40                        # upstream's multi-subject epoch
    batches, _ = loop.epoch_batches(data, tiny_tc(batch_size=42), epoch=0)
    assert len(batches) == 750 * 40 // 42 == 714 and all(len(b) == 3 and all(len(i) == 14 for i in b) for b in batches)
    data.samples_per_epoch = 750                             # one session, one subject
    one = fake_data(n_train=690)
    one.samples_per_epoch = 750
    batches, _ = loop.epoch_batches(one, tiny_tc(batch_size=24), epoch=0)
    assert len(batches) == 31                                # upstream: 750 // 24
    counts = np.bincount(np.concatenate([b[0] for b in batches]), minlength=690)
    assert counts.min() >= 1 and counts.max() <= 2           # permutations back to back: every trial, evenly
    again, _ = loop.epoch_batches(one, tiny_tc(batch_size=24), epoch=0)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))


def repeated_images(data: TrainData, times: int = 3) -> TrainData:
    """Each train image seen ``times`` times, as NSD's images are (up to 3 repeats per subject)."""
    for s in data.subjects:
        s.image_ids = s.image_ids[np.arange(len(s.image_ids)) // times * times]
    return data


def test_a_batch_with_a_repeated_image_is_drawn_again_and_the_epoch_keeps_its_steps():
    data = repeated_images(fake_data(n_train=690))
    data.samples_per_epoch = 750
    batches, redrawn = loop.epoch_batches(data, tiny_tc(batch_size=24), epoch=0)
    assert len(batches) == 750 // 24 and redrawn > 0         # 24 of 230 images, 3 trials each: repeats are common
    for (idx,) in batches:
        assert len(np.unique(data.subjects[0].image_ids[idx])) == 24


def test_onecycle_reaches_its_end_when_images_repeat(tmp_path):
    """Upstream's step count: every epoch trains its steps, so OneCycle runs to its end (skipping
    the batches with a repeat left 5-10% of it unused, the lr never down to its floor)."""
    data = repeated_images(fake_data(n_train=96))
    data.samples_per_epoch = 96
    tc = tiny_tc(num_epochs=3, batch_size=12, max_lr=1e-2)
    loop.run(data, tiny_cfg(), tc, tmp_path, {"subjects": [1]})
    ckpt = checkpoint.read(tmp_path / "last.pth")
    assert [row["steps"] for row in ckpt["history"]] == [96 // 12] * 3
    assert sum(row["redrawn_shares"] for row in ckpt["history"]) > 0
    assert ckpt["lr_scheduler"]["last_epoch"] == ckpt["lr_scheduler"]["total_steps"] == 3 * 96 // 12


def test_schedulers_are_upstreams():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    linear = runtime.make_scheduler(opt, tiny_tc(lr_scheduler="linear", max_lr=3e-4), total_steps=100)
    lrs = []
    for _ in range(100):
        lrs.append(linear.get_last_lr()[0])
        opt.step()
        linear.step()
    assert lrs[0] == pytest.approx(1e-4) and linear.get_last_lr()[0] == pytest.approx(3e-4)   # torch defaults
    assert all(np.diff(lrs) > 0)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    cycle = runtime.make_scheduler(opt, tiny_tc(max_lr=3e-4, num_epochs=150), total_steps=150 * 31)
    assert cycle.get_last_lr()[0] == pytest.approx(3e-4 / 25)                 # div_factor 25
    assert cycle.total_steps == 4650 and cycle._schedule_phases[0]["end_step"] == pytest.approx(2 / 150 * 4650 - 1)


# --------------------------------------------------------------------------- runs
def test_model_learns_and_writes_its_outputs(tmp_path):
    stats = loop.run(fake_data(), tiny_cfg(), tiny_tc(num_epochs=30, ckpt_interval=10, max_lr=1e-2), tmp_path,
                      {"subjects": [1]})
    rows = stats["final"]
    assert (tmp_path / "train_stats.json").exists() and (tmp_path / "log.csv").exists()
    assert (tmp_path / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    history = checkpoint.read(tmp_path / "last.pth")["history"]
    assert history[-1]["train_loss_total"] < 0.5 * history[0]["train_loss_total"]
    # 10 test images: one retrieval is 0.1 (chance); over seeds this run scores 0.2-0.5 each way
    assert (rows["val_image_to_brain"] + rows["val_brain_to_image"]) / 2 >= 0.3
    assert stats["params"]["total"] > 0 and stats["wall_time_s"] > 0 and stats["peak_memory_mb"] > 0


def test_the_real_configs_training_regime_learns(tmp_path):
    """The real run's regime (precision, DeepSpeed or not, activation checkpointing, no accumulation:
    the schema's model defaults, as config.yaml leaves them) at a tiny size: the default is one the tests run."""
    import yaml

    from conftest import REPO
    from fmri_recon.configuration import defaults

    model = {**defaults("model"), **(yaml.safe_load((REPO / "config.yaml").read_text()).get("model") or {})}
    keys = ("precision", "deepspeed_offload", "activation_checkpointing", "grad_accum", "clip_exclude_mean")
    assert model["grad_accum"] == 1 and model["activation_checkpointing"] is True     # contrastive over all 24
    tc = tiny_tc(num_epochs=30, ckpt_interval=10, max_lr=1e-2, **{k: model[k] for k in keys if k != "clip_exclude_mean"})
    if tc.deepspeed_offload:
        pytest.skip("the DeepSpeed regime runs in test_deepspeed.py")
    stats = loop.run(fake_data(), tiny_cfg(clip_exclude_mean=model["clip_exclude_mean"]), tc, tmp_path, {"subjects": [1]})
    history = checkpoint.read(tmp_path / "last.pth")["history"]
    assert stats["precision"] == "bf16" and history[-1]["train_loss_total"] < 0.5 * history[0]["train_loss_total"]
    # Held-out: the contrastive loss (41.5 -> 9.9 measured) and retrieval over 10 images (chance 0.1,
    # steps of 0.1; upstream's head, without our clip_exclude_mean, measured 0.6 and 0.2).
    assert history[-1]["val_loss_clip"] < 0.5 * history[0]["val_loss_clip"]
    assert (stats["final"]["val_image_to_brain"] + stats["final"]["val_brain_to_image"]) / 2 >= 0.3


def test_retrieval_head_excludes_the_train_targets_mean(tmp_path):
    data = fake_data()
    data.targets = data.targets + 2.0                       # a shared direction, as CLIP tokens have
    loop.run(data, tiny_cfg(clip_exclude_mean=True), tiny_tc(num_epochs=1), tmp_path, {"subjects": [1]})
    saved = checkpoint.read(tmp_path / "last.pth")["model_state_dict"]["backbone.clip_mean"]
    mean = data.targets[data.subjects[0].target_index].float().mean(0)
    torch.testing.assert_close(saved, mean / mean.norm())
    model, _ = checkpoint.load_model(tmp_path / "last.pth")
    clip_voxels = model(data.subjects[0].test_voxels[:, 0].float()[:, None])[1]
    assert (clip_voxels.flatten(1) @ saved.flatten()).abs().max() < 1e-4


def test_killed_run_resumes_to_the_same_weights(tmp_path, caplog):
    data, cfg, tc = fake_data(), tiny_cfg(), tiny_tc(num_epochs=4, ckpt_interval=2)
    loop.run(data, cfg, tc, tmp_path / "straight", {"subjects": [1]})
    out = loop.run(data, cfg, tc, tmp_path / "split", {"subjects": [1]}, stop_after=2)
    assert out == {"stopped_after": 2} and not (tmp_path / "split/train_stats.json").exists()
    assert checkpoint.read(tmp_path / "split/last.pth")["epoch"] == 2
    with caplog.at_level(logging.INFO, logger="fmri_recon.train"):
        loop.run(data, cfg, tc, tmp_path / "split", {"subjects": [1]})
    assert "resuming from" in caplog.text and "after epoch 2" in caplog.text
    a = checkpoint.read(tmp_path / "straight/last.pth")
    b = checkpoint.read(tmp_path / "split/last.pth")
    for k, v in a["model_state_dict"].items():
        assert torch.equal(v, b["model_state_dict"][k]), k
    assert [r["train_loss_total"] for r in a["history"]] == [r["train_loss_total"] for r in b["history"]]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path, caplog):
    data = fake_data()
    loop.run(data, tiny_cfg(), tiny_tc(num_epochs=2), tmp_path, {"subjects": [1]})
    with caplog.at_level(logging.WARNING, logger="fmri_recon.train"):
        loop.run(data, tiny_cfg(), tiny_tc(num_epochs=2, max_lr=1e-3), tmp_path, {"subjects": [1]})
    assert "train_config.max_lr: checkpoint 0.003, config 0.001" in caplog.text and "from scratch" in caplog.text
    assert checkpoint.read(tmp_path / "last.pth")["train_config"]["max_lr"] == 1e-3


def test_checkpoint_loads_strictly_from_its_own_config(tmp_path):
    loop.run(fake_data(), tiny_cfg(), tiny_tc(num_epochs=1), tmp_path, {"subjects": [1]})
    model, ckpt = checkpoint.load_model(tmp_path / "last.pth")
    assert model.cfg.n_blocks == 1 and set(ckpt) >= {"epoch", "model_state_dict", "optimizer_state_dict",
                                                     "lr_scheduler", "train_losses", "test_losses", "lrs", "config"}
    other = MindEyeModel(BrainConfig(**{**ckpt["config"], "n_blocks": 2}))
    with pytest.raises(RuntimeError, match="mixer_blocks1.1"):
        other.load_state_dict(ckpt["model_state_dict"], strict=True)


def test_nan_loss_names_epoch_and_batch(tmp_path):
    data = fake_data()
    data.targets[data.subjects[0].target_index[5]] = float("nan")
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 1, batch \d+"):
        loop.run(data, tiny_cfg(), tiny_tc(num_epochs=1), tmp_path, {"subjects": [1]})


def test_multi_subject_pretraining_then_fine_tuning(tmp_path):
    pre = loop.run(fake_data(voxels=(30, 25)), tiny_cfg(voxels=(30, 25)), tiny_tc(num_epochs=2, batch_size=8),
                    tmp_path / "pre", {"subjects": [1, 2]})
    pretrained = checkpoint.read(tmp_path / "pre/last.pth")["model_state_dict"]
    assert pretrained["ridge.linears.1.weight"].shape == (16, 25) and pre["params"]["ridge"] == 16 * 55 + 32
    model = MindEyeModel(tiny_cfg(voxels=(40,)))
    runtime.init_from_pretrained(model, tmp_path / "pre/last.pth")
    state = model.state_dict()
    assert torch.equal(state["backbone.backbone_linear.weight"], pretrained["backbone.backbone_linear.weight"])
    assert torch.equal(state["ridge.linears.0.bias"], pretrained["ridge.linears.0.bias"])   # upstream's quirk
    assert state["ridge.linears.0.weight"].shape == (16, 40)


def released_checkpoint(path, cfg: BrainConfig, seed=3):
    """A ``last.pth`` in exactly upstream's layout (no config of ours), as pscotti/mindeyev2 ships
    them under train_logs/: its weights, an AdamW state, the scheduler's and the loss lists."""
    torch.manual_seed(seed)
    model = MindEyeModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, cfg.num_voxels[0]), 0)[0].sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=10)
    torch.save({"epoch": 299, "model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "lr_scheduler": sched.state_dict(), "train_losses": [1.0, 0.5], "test_losses": [1.1, 0.6],
                "lrs": [1e-4, 1e-3]}, path)
    return model.state_dict()


def test_fine_tuning_from_a_released_checkpoint(tmp_path):
    """Every weight but the ridge's starts as released (the first ridge bias too: upstream's
    quirk), the optimizer state is not loaded, and the fine-tune learns."""
    released = released_checkpoint(tmp_path / "last.pth", tiny_cfg(voxels=(30, 25)))
    model = MindEyeModel(tiny_cfg(voxels=(40,)))
    runtime.init_from_pretrained(model, tmp_path / "last.pth")
    state = model.state_dict()
    for key, value in released.items():
        if not key.startswith("ridge."):
            assert torch.equal(state[key], value), key
    assert torch.equal(state["ridge.linears.0.bias"], released["ridge.linears.0.bias"])
    stats = loop.run(fake_data(voxels=(40,)), tiny_cfg(voxels=(40,)), tiny_tc(num_epochs=4), tmp_path / "ft",
                      {"subjects": [1]}, init_from=tmp_path / "last.pth")
    losses = checkpoint.read(tmp_path / "ft/last.pth")["train_losses"]
    assert losses[-1] < 0.8 * losses[0], losses
    assert stats["final"]["epoch"] == 4


@pytest.mark.parametrize("change, named", [
    ({"hidden_dim": 8}, r"backbone.backbone_linear.weight: checkpoint \(32, 16\), configured \(32, 8\) \(hidden_dim = 8"),
    ({"blurry_recon": True}, r"backbone.b_maps_projector.0.weight \(512, 64, 1, 1\): missing from the checkpoint \(blurry_recon = True\)"),
    ({"clip_emb_dim": 4, "prior_heads": 1}, r"backbone.clip_proj.0.weight: checkpoint \(8,\), configured \(4,\) \(clip_emb_dim = 4\)"),
])
def test_a_released_checkpoint_that_does_not_fit_names_the_key(tmp_path, change, named):
    released_checkpoint(tmp_path / "last.pth", tiny_cfg(voxels=(30, 25)))
    model = MindEyeModel(BrainConfig(**{**tiny_cfg().to_dict(), **change}))
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"last.pth: does not fit the configured model: .*" + named):
        runtime.init_from_pretrained(model, tmp_path / "last.pth")


def test_a_released_checkpoint_is_memory_mapped(tmp_path):
    """Reading the weights of a release does not read its optimizer state into memory: the peak
    memory of a process reading them is the same with a 400 MB optimizer state as with none."""
    import subprocess
    import sys

    released_checkpoint(tmp_path / "small.pth", tiny_cfg())
    ckpt = torch.load(tmp_path / "small.pth", weights_only=False)
    ckpt["optimizer_state_dict"]["state"][0]["exp_avg"] = torch.ones(100_000_000)     # 400 MB
    torch.save(ckpt, tmp_path / "big.pth")
    del ckpt

    def peak_mb(path):
        # VmHWM: this process's peak (ru_maxrss would carry over the forking pytest's)
        code = ("import sys; from fmri_recon.train import checkpoint; "
                "state = checkpoint.read_model_state(sys.argv[1]); assert 'backbone.backbone_linear.weight' in state; "
                "print([int(line.split()[1]) / 1024 for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        return float(out.stdout.split()[-1])

    small, big = peak_mb(tmp_path / "small.pth"), peak_mb(tmp_path / "big.pth")
    assert big - small < 100, (small, big)
    (tmp_path / "odd.pth").write_bytes(b"")
    torch.save({"state_dict": {}}, tmp_path / "odd.pth")
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"odd.pth: no model_state_dict .* has \['state_dict'\]"):
        checkpoint.read_model_state(tmp_path / "odd.pth")


def test_gradient_accumulation_reaches_the_same_global_batch(tmp_path):
    data, cfg = fake_data(), tiny_cfg(drop=0.0, use_prior=False)
    a = loop.run(data, cfg, tiny_tc(num_epochs=1, grad_accum=1, mixup_pct=0), tmp_path / "a", {"subjects": [1]})
    b = loop.run(data, cfg, tiny_tc(num_epochs=1, grad_accum=2, mixup_pct=0), tmp_path / "b", {"subjects": [1]})
    # same number of optimizer steps; losses differ only through the smaller contrastive batch
    assert len(checkpoint.read(tmp_path / "a/last.pth")["lrs"]) == len(checkpoint.read(tmp_path / "b/last.pth")["lrs"])
    assert checkpoint.read(tmp_path / "a/last.pth")["lr_scheduler"]["last_epoch"] == \
        checkpoint.read(tmp_path / "b/last.pth")["lr_scheduler"]["last_epoch"]
    assert a["final"]["train_loss_clip"] != b["final"]["train_loss_clip"]


def test_fp16_on_cpu_is_refused_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        loop.run(fake_data(), tiny_cfg(), tiny_tc(precision="fp16"), tmp_path, {"subjects": [1]})


def test_a_released_model_loads_strictly_into_the_experiments_architecture(tmp_path):
    released = released_checkpoint(tmp_path / "last.pth", tiny_cfg(voxels=(30,)))
    model = checkpoint.load_released(tmp_path / "last.pth", tiny_cfg(voxels=(30,)))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in released.items())
    assert not model.training
    with pytest.raises(checkpoint.CheckpointMismatch,
                       match=r"backbone.clip_mean \(4, 8\): missing from the checkpoint \(clip_exclude_mean = True\)"):
        checkpoint.load_released(tmp_path / "last.pth", tiny_cfg(voxels=(30,), clip_exclude_mean=True))
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"ridge.linears.0.weight: checkpoint \(16, 30\), "
                                                            r"configured \(16, 31\) \(hidden_dim = 16\)"):
        checkpoint.load_released(tmp_path / "last.pth", tiny_cfg(voxels=(31,)))
