"""The demo reconstructs: its decoders learnt from the train images only, its table ranks the
upper bound above the brain and the brain above chance, and breaking the decode path shows.

Thresholds were set from measured demo runs with margin (the measured values are in the comments).
"""
import json

import numpy as np
import pytest
import torch

from conftest import snakemake
from fmri_recon import evaluate, nsd, tables
from fmri_recon.clip_targets import TargetCache
from fmri_recon.decoder_training import TRAINING_JSON
from fmri_recon.metrics import captions as caption_metrics
from fmri_recon.metrics import image as image_metrics

pytestmark = pytest.mark.e2e
BRAIN = ("lite_bigG", "recon")             # the brain-predicted row compared with its upper bound
UPPER = ("upper_bound_bigG", "upper_bound")


def rows(run):
    return {(r["experiment"], r["stage"]): r for r in tables.read_table(run / "tables/metrics.csv")}


def derangement(n):
    return np.roll(np.arange(n), 1)         # every image paired with another one


def test_no_test_image_enters_a_decoder_training(demo_run):
    test = nsd.open_split(demo_run / "data", 1, 1).test_images
    for kind in ("unclip", "git", "sdxl"):
        report = json.loads((demo_run / "weights/trained" / kind / TRAINING_JSON).read_text())
        ids = np.array(report["train_image_ids"])
        assert len(ids) == 450 and not np.isin(ids, test).any(), kind
        for part in ("vae", "unet", "git"):
            if part in report:                         # each training's loss fell
                assert report[part]["last_loss"] < 0.7 * report[part]["first_loss"], (kind, part, report[part])


@pytest.fixture(scope="module")
def chance(demo_run):
    """Chance of each compared metric: the brain row's images and captions scored against
    the ground truth of other test images (two-way identification's chance is 0.5 by definition)."""
    gt = evaluate.load_pt(demo_run / "data" / nsd.EVAL_IMAGES).float()
    recons = evaluate.load_pt(demo_run / f"evals/{BRAIN[0]}/{BRAIN[0]}_all_recons.pt").float()
    shuffled = gt[derangement(len(gt))]
    pred = [str(c) for c in evaluate.load_pt(demo_run / f"evals/{BRAIN[0]}/{BRAIN[0]}_all_predcaptions.pt")]
    coco = [str(c) for c in evaluate.load_pt(demo_run / "data" / nsd.EVAL_CAPTIONS)]
    return {"pixcorr": image_metrics.pixcorr(shuffled, recons), "ssim": image_metrics.ssim(shuffled, recons),
            "alexnet2": 0.5, "caption_meteor": caption_metrics.meteor(pred, [coco[i] for i in derangement(len(coco))])}


# metric: (least margin of the upper bound over the brain row, of the brain row over chance)
MARGINS = {"pixcorr": (0.05, 0.05), "ssim": (0.02, 0.01), "alexnet2": (0.05, 0.05), "caption_meteor": (0.03, 0.03)}


@pytest.mark.parametrize("metric", MARGINS)
def test_table_ranks_upper_bound_over_brain_over_chance(demo_run, chance, metric):
    table = rows(demo_run)
    upper, brain = float(table[UPPER][metric]), float(table[BRAIN][metric])
    above_brain, above_chance = MARGINS[metric]
    assert upper > brain + above_brain, (metric, upper, brain)
    assert brain > chance[metric] + above_chance, (metric, brain, chance[metric])


@pytest.fixture(scope="module")
def decoding(demo_run):
    """The demo's trained decoder and the ground-truth bigG tokens and images of 24 test images."""
    from fmri_recon.unclip import UnclipDecoder

    torch.set_num_threads(2)
    split = nsd.open_split(demo_run / "data", 1, 1)
    ids = split.test_images[:24]
    tokens = torch.from_numpy(TargetCache(demo_run / "cache/clip_targets/bigG.hdf5").get(ids)).float()
    gt = evaluate.load_pt(demo_run / "data" / nsd.EVAL_IMAGES)[:24].float()
    decoder = UnclipDecoder.from_pretrained(demo_run / "weights/trained/unclip")

    def identification(tokens, guidance=5.0):
        out = decoder.decode(tokens, torch.Generator().manual_seed(0), num_steps=20, guidance=guidance, batch_size=24)
        return out, pixel_identification(gt, out)

    return tokens, identification


def pixel_identification(gt, images):
    from fmri_recon.images import resize

    return image_metrics.two_way_identification(resize(gt, [32, 32]).flatten(1), resize(images, [32, 32]).flatten(1))


def test_shuffled_conditioning_brings_the_upper_bound_to_chance(decoding):
    tokens, identification = decoding
    _, true = identification(tokens)
    _, shuffled = identification(tokens[derangement(len(tokens))])
    assert true > 0.8, true                                   # measured: 0.9x
    assert abs(shuffled - 0.5) < 0.15, shuffled


def test_guidance_zero_ignores_the_tokens(decoding):
    """With guidance 0 only the unconditional branch (noise tokens) is used: the output changes
    and no longer identifies its image."""
    tokens, identification = decoding
    guided, true = identification(tokens)
    unguided, blind = identification(tokens, guidance=0.0)
    assert not torch.allclose(guided, unguided, atol=0.05)
    assert blind < true - 0.2 and blind < 0.7, (true, blind)


def test_decoder_prefers_its_own_token_space(demo_run):
    """check_decoder on the trained decoder: the tokens of the other space (before ln_post) decode
    worse, and the verdict names the space the decoder was trained in."""
    snakemake(demo_run, "checks/decoder_token_space.json")
    report = json.loads((demo_run / "checks/decoder_token_space.json").read_text())
    scores = report["scores"]
    assert report["expects"] == "post_ln_post", report["report"]
    assert scores["post_ln_post"]["two_way"] > scores["pre_ln_post"]["two_way"] + 0.15, scores


def test_refinement_keeps_the_content(demo_run):
    """Refinement at upstream's strength keeps what the reconstruction shows: the refined images
    stay close to their reconstructions (not replaced by noise), and still identify their images."""
    table = rows(demo_run)
    recon, enhanced = table[("lite_bigG", "recon")], table[("lite_bigG", "enhanced")]
    assert float(enhanced["alexnet2"]) > 0.5 + 0.05, enhanced["alexnet2"]
    assert float(enhanced["pixcorr"]) > 0.5 * float(recon["pixcorr"]), (recon["pixcorr"], enhanced["pixcorr"])
    name = "lite_bigG"
    recons = evaluate.load_pt(demo_run / f"evals/{name}/{name}_all_recons.pt").float()
    refined = evaluate.load_pt(demo_run / f"evals/{name}/{name}_all_enhancedrecons.pt").float()
    assert image_metrics.pixcorr(recons, refined) > 0.6
