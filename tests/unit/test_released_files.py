"""Every file the real run reads from a hub loads as its publisher wrote it (tests/support/upstream_files.py),
through the code the workflow uses, and no file's pickle runs code or needs its objects' modules."""
import logging

import numpy as np
import pytest
import torch

import upstream_files as up
from fmri_recon.data import nsd, released
from fmri_recon.decode import converter
from fmri_recon.evaluate import score
from fmri_recon.targets import lowlevel
from fmri_recon.train import checkpoint, runtime
from fmri_recon.evaluate.metrics import brain as B
from fmri_recon.models import BrainConfig, MindEyeModel

CAPTIONS = ["a man riding a wave on top of a surfboard", "two giraffes standing in a field", "a plate of food"]


def tiny_model(seed=0, voxels=20) -> tuple[MindEyeModel, BrainConfig]:
    torch.manual_seed(seed)
    cfg = BrainConfig(num_voxels=[voxels], hidden_dim=16, n_blocks=1, clip_seq_dim=4, clip_emb_dim=8,
                      prior_depth=1, prior_dim_head=8, clip_exclude_mean=False)
    return MindEyeModel(cfg), cfg


# --------------------------------------------------------------------------- evals/
@pytest.mark.parametrize("name", [nsd.EVAL_CAPTIONS, nsd.EVAL_GIT_CAPTIONS])
def test_numpy1_caption_arrays_load_as_the_workflow_reads_them(tmp_path, name):
    path = up.captions_file(tmp_path / name, CAPTIONS)
    assert up.numpy1_names(path)                 # the replica names numpy.core, as numpy 1.x wrote
    loaded = nsd.load_eval(tmp_path, name)
    assert [str(c) for c in loaded] == CAPTIONS


def test_released_outputs_load_as_evaluate_reads_them(tmp_path):
    """``evals/<model>/<model>_all_*.pt`` of recon_inference.ipynb: tensors, and the predicted
    captions as the numpy array its ``np.hstack`` built."""
    folder = tmp_path / "evals/final_subj01_pretrained_1sess_24bs"
    recons = torch.rand(3, 3, 256, 256)
    up.save(recons, folder / "final_subj01_pretrained_1sess_24bs_all_recons.pt")
    up.captions_file(folder / "final_subj01_pretrained_1sess_24bs_all_predcaptions.pt", CAPTIONS)
    up.save(torch.rand(3, 3, 224, 224), tmp_path / "evals/all_images.pt")
    assert torch.equal(score.load_pt(folder / "final_subj01_pretrained_1sess_24bs_all_recons.pt"), recons)
    assert [str(c) for c in score.load_pt(folder / "final_subj01_pretrained_1sess_24bs_all_predcaptions.pt")] \
        == CAPTIONS
    assert nsd.load_eval(tmp_path, nsd.EVAL_IMAGES).shape == (3, 3, 224, 224)


# --------------------------------------------------------------------------- checkpoints
def test_torch21_last_pth_fine_tunes_and_evaluates_with_exactly_its_weights(tmp_path, caplog):
    src, cfg = tiny_model(seed=1)
    path = up.last_pth(tmp_path / "last.pth", src)
    with caplog.at_level(logging.INFO, logger="fmri_recon.data.released"):
        model = checkpoint.load_released(path, cfg)              # checkpoint: (evaluate only)
    assert "torch.optim.lr_scheduler.OneCycleLR" in caplog.text   # left unread, and said so
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    tuned, _ = tiny_model(seed=2, voxels=30)                      # init_from: another subject's voxels
    runtime.init_from_pretrained(tuned, path)
    assert torch.equal(tuned.state_dict()["backbone.backbone_linear.weight"],
                       src.state_dict()["backbone.backbone_linear.weight"])
    assert torch.equal(tuned.state_dict()["ridge.linears.0.bias"], src.state_dict()["ridge.linears.0.bias"])


def test_a_released_file_runs_no_code_when_read(tmp_path):
    marker = tmp_path / "ran"
    src, cfg = tiny_model()
    path = up.last_pth(tmp_path / "last.pth", src, extra={"note": up.runs_code(marker)})
    torch.load(path, weights_only=False)                         # the replica does run it when unpickled
    assert marker.exists()
    marker.unlink()
    checkpoint.read_model_state(path)
    checkpoint.load_released(path, cfg)
    assert not marker.exists()


def test_a_placeholder_where_weights_belong_is_named(tmp_path):
    src, _ = tiny_model()
    state = dict(src.state_dict(), **{"backbone.oddity": up.omegaconf_object({"a": 1})})
    path = up.save({"epoch": 1, "model_state_dict": state}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"odd.pth: 'model_state_dict' holds 1 entries that are not tensors, e.g. "
                                         r"\[\('backbone.oddity', 'unread object omegaconf.dictconfig.DictConfig'\)\]"):
        checkpoint.read_model_state(path)


def test_lightning_unclip_checkpoint_converts_without_omegaconf(tmp_path):
    """sgm's Lightning file: callbacks, optimizer and scheduler states, OmegaConf hyper-parameters
    (omegaconf is not installed here) beside the state dict the decoder is converted from."""
    from diffusers import UNet2DConditionModel
    from test_decoders import SEQ, SGM_UNET, SGM_VAE, _sgm_checkpoint

    from fmri_recon.decode import weights

    state, usd, _ = _sgm_checkpoint(tmp_path)
    path = up.lightning_ckpt(tmp_path / "unclip6_epoch0_step110000.ckpt", state)
    out = weights.convert_unclip_checkpoint(path, tmp_path / "decoder", unet_params=SGM_UNET, vae_params=SGM_VAE,
                                            image_size=64, seq_len=SEQ)
    unet = UNet2DConditionModel.from_pretrained(out / "unet", local_files_only=True)
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in usd.items())


def test_upstreams_converter_file_loads(tmp_path):
    from test_converter import upstream_converter

    torch.manual_seed(0)
    theirs = upstream_converter(16, 12, 17, 8)
    path = up.converter_file(tmp_path / "bigG_to_L_epoch8.pth", theirs.state_dict())
    ours = converter.load(path)
    x = torch.randn(2, 16, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


# --------------------------------------------------------------------------- frozen models
def test_gnet_file_of_numpy1_arrays_loads(tmp_path):
    src = B.GNet8Encoder({1: 6, 2: 4}, seed=3)
    shared = dict(src.shared.state_dict(), mu=torch.full((1, 3, 1, 1), 0.45))
    path = up.gnet_file(tmp_path / "gnet_multisubject.pt", shared,
                        {s: src.fwrfs[str(s)].state_dict() for s in (1, 2)})
    model = B.GNet8Encoder.load_upstream(path, subjects=[1])
    x = torch.rand(2, 3, 227, 227)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, 1), src(x - 0.45, 1))


def test_lowlevel_vae_in_the_legacy_format_loads(tmp_path):
    vae = lowlevel.build_vae(tiny=True)
    path = up.vae_file(tmp_path / "sd_image_var_autoenc.pth", vae.state_dict())
    loaded = lowlevel.load_vae(path, tiny=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in vae.state_dict().items())


def test_vicregl_full_checkpoint_loads(tmp_path):
    teacher = lowlevel.build_teacher(tiny=True)
    lowlevel.save_teacher(teacher, tmp_path / "ours.pth")
    model = released.load(tmp_path / "ours.pth")["model"]
    path = up.teacher_file(tmp_path / "convnext_xlarge_alpha0.75_fullckpt.pth", model)
    loaded = lowlevel.load_teacher(path, tiny=True)
    x = lowlevel.normalise(torch.rand(1, 3, 224, 224))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), teacher.eval()(x))


def test_numpy_arrays_and_scalars_of_both_numpy_names_load_without_placeholders(tmp_path, caplog):
    obj = {"f": np.float64(1.5), "i": np.int64(3), "a": np.arange(4, dtype=np.float32), "s": np.array(CAPTIONS)}
    for numpy1 in (True, False):
        path = up.save(obj, tmp_path / f"np{numpy1}.pt", numpy1=numpy1)
        with caplog.at_level(logging.INFO, logger="fmri_recon.data.released"):
            got = released.load(path)
        assert "placeholders" not in caplog.text          # weights-only, no inert fallback
        assert got["f"] == 1.5 and got["i"] == 3 and list(got["s"]) == CAPTIONS
        np.testing.assert_array_equal(got["a"], obj["a"])
