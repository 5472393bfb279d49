"""The demo tells the truth about each stage: its decoders learnt from the train images only, its
table ranks the upper bound above the brain and the brain above chance, the blurry branch earns
the low-level pixels, and breaking the decode path shows.

Chance is measured, not assumed: each row's own images (or captions) scored against the ground
truth of other test images. Margins are set from measured demo runs with room to spare; the
measured values are in the comments (docs/demo.md).
"""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import DEMO, snakemake
from fmri_recon.data import nsd
from fmri_recon.evaluate import score, tables
from fmri_recon.targets.clip_targets import TargetCache
from fmri_recon.decode.tiny_vae import TRAINING_JSON
from fmri_recon.evaluate.metrics import captions as caption_metrics
from fmri_recon.evaluate.metrics import feature_nets
from fmri_recon.evaluate.metrics import image as image_metrics

pytestmark = pytest.mark.e2e
# brain experiment: its space's upper bound (the same decoder fed the ground-truth tokens)
PAIRS = {"lite_bigG": "upper_bound_bigG", "blurry_bigG": "upper_bound_bigG"}
TWO_WAY = "alexnet2"          # the table's two-way identification (AlexNet layer 2, random weights here)


def table(run) -> dict:
    return {(r["experiment"], r["stage"]): r for r in tables.read_table(run / "tables/metrics.csv")}


def row(rows, name):
    return rows[(name, "upper_bound" if name.startswith("upper_bound") else "recon")]


def others(n: int) -> np.ndarray:
    return np.roll(np.arange(n), 1)          # every image paired with another one


@pytest.fixture(scope="module")
def run(demo_run):
    return demo_run                           # the README demo's run


@pytest.fixture(scope="module")
def chance(run) -> dict:
    """{name: {metric: chance}}: each row's reconstructions scored exactly as evaluate scores them,
    against another test image's ground truth; its captions against every other image's caption."""
    gt = score.load_pt(run / "data" / nsd.EVAL_IMAGES).float()
    coco = [str(c) for c in score.load_pt(run / "data" / nsd.EVAL_CAPTIONS)]
    alexnet = {TWO_WAY: feature_nets.build_feature_model(TWO_WAY, None, seed=0)}   # evaluate's random net
    out = {}
    for name in [*PAIRS, *set(PAIRS.values())]:
        recons = score.load_pt(run / f"evals/{name}/{name}_all_recons.pt").float()
        scores = feature_nets.image_metrics(gt[others(len(gt))], recons, alexnet)
        pred = [str(c) for c in score.load_pt(run / f"evals/{name}/{name}_all_predcaptions.pt")]
        meteor = np.mean([caption_metrics.meteor([pred[i]] * (len(coco) - 1), coco[:i] + coco[i + 1:])
                          for i in range(len(coco))])
        out[name] = {"pixcorr": scores["pixcorr"], "ssim": scores["ssim"], TWO_WAY: scores[TWO_WAY],
                     "caption_meteor": float(meteor)}
    return out


# metric: (least margin of the upper bound over each brain row, of each brain row over chance).
# Measured since the synthetic betas are z-scored as the released ones (issue 30; lite, blurry recon;
# upper bound bigG; chance of lite/blurry/upper): PixCorr .125/.142, upper .255, chance .012/.046/.090;
# SSIM .546/.584, upper .580, chance .474/.501/.443; AlexNet(2) two-way .727/.757, upper .836, chance
# .421/.437/.510. SSIM does not separate blurry_bigG's recon from the upper bound on 40 images (ci95
# +-.06): its check only catches a brain row clearly above its upper bound (a negative margin).
MARGINS = {"pixcorr": (0.08, 0.03), "ssim": (-0.03, 0.015), TWO_WAY: (0.05, 0.08)}


@pytest.mark.parametrize("metric", MARGINS)
@pytest.mark.parametrize("name", PAIRS)
def test_upper_bound_over_brain_over_chance(run, chance, name, metric):
    rows = table(run)
    upper, brain = float(row(rows, PAIRS[name])[metric]), float(row(rows, name)[metric])
    over_brain, over_chance = MARGINS[metric]
    assert upper > brain + over_brain, (name, metric, upper, brain)
    assert brain > chance[name][metric] + over_chance, (name, metric, brain, chance[name][metric])
    assert upper > chance[PAIRS[name]][metric] + over_chance


def test_captions_upper_bound_over_brain_and_chance(run, chance):
    """METEOR: the upper bound's captions (.361 measured) far above the brain's (.199, .193) and
    above their own chance (.207): the captioning path works when its features are right."""
    rows = table(run)
    for name, upper in PAIRS.items():
        assert float(row(rows, upper)["caption_meteor"]) > float(row(rows, name)["caption_meteor"]) + 0.08, name
        assert float(row(rows, upper)["caption_meteor"]) > chance[upper]["caption_meteor"] + 0.08, upper


@pytest.mark.xfail(strict=True, reason="known shortfall: the demo's brain captions sit at chance (METEOR .199/.193 "
                   "against .199/.196). They come from the tiny diffusion prior's outputs, as upstream's do, which "
                   "give GIT 3 distinct captions for 40 images; the retrieval head's outputs would give .28 against "
                   ".22. Strict: passing means the shortfall is gone, and this mark must go.")
def test_brain_captions_over_chance(run, chance):
    rows = table(run)
    for name in PAIRS:
        assert float(row(rows, name)["caption_meteor"]) > chance[name]["caption_meteor"] + 0.01, name


def test_the_blurry_branch_blend_leads_on_low_level_metrics(run):
    """Upstream scores a blurry experiment's refined images blended 3:1 with its blurry ones: that
    row (stage enhanced of blurry_bigG) beats every other experiment's final row on PixCorr and
    SSIM (measured .160/.565 against lite_bigG's .063/.533), as the paper's low-level branch does."""
    rows = table(run)
    blend = rows[("blurry_bigG", "enhanced")]
    for name in ("lite_bigG",):
        final = rows[(name, "enhanced")]
        assert float(blend["pixcorr"]) > float(final["pixcorr"]) + 0.03, (name, blend["pixcorr"], final["pixcorr"])
        assert float(blend["ssim"]) > float(final["ssim"]) + 0.01, (name, blend["ssim"], final["ssim"])
    blurry = rows[("blurry_bigG", "blurry")]                 # the blurry images alone: .352 / .632 measured
    assert float(blurry["pixcorr"]) > 0.2 and float(blurry["ssim"]) > float(blend["ssim"])


def test_no_test_image_enters_a_decoder_training(run):
    test = nsd.open_split(run / "data", 1, 1).test_images
    for kind in ("unclip", "git", "sdxl", "lowlevel"):
        report = json.loads((run / "weights/trained" / kind / TRAINING_JSON).read_text())
        ids = np.array(report["train_image_ids"])
        assert len(ids) > 400 and not np.isin(ids, test).any(), kind
        for part in ("vae", "unet", "git"):
            if part in report:                         # each training's loss fell
                assert report[part]["last_loss"] < 0.7 * report[part]["first_loss"], (kind, part, report[part])


# --------------------------------------------------------------------------- breaking the decode path
@pytest.fixture(scope="module")
def decoding(run):
    """The demo's trained decoder, the ground truth of 24 test images and their bigG tokens, and
    ``identification(tokens, guidance)``: the decoded images and their pixel two-way identification."""
    from fmri_recon.decode.unclip import UnclipDecoder

    torch.set_num_threads(2)
    split = nsd.open_split(run / "data", 1, 1)
    ids = split.test_images[:24]
    cache = TargetCache(run / "cache/clip_targets/bigG.hdf5")
    tokens = torch.from_numpy(cache.get(ids)).float()
    gt = score.load_pt(run / "data" / nsd.EVAL_IMAGES)[:24].float()
    decoder = UnclipDecoder.from_pretrained(run / "weights/trained/unclip")

    def identification(tokens, guidance=5.0):
        out = decoder.decode(tokens, torch.Generator().manual_seed(0), **DECODE, guidance=guidance)
        return out, pixel_identification(gt, out)

    return SimpleNamespace(tokens=tokens, gt=gt, decoder=decoder, cache=cache, identification=identification)


DECODE = {"num_steps": 20, "batch_size": 24}


def pixel_identification(gt, images):
    from fmri_recon.resize import resize

    return image_metrics.two_way_identification(resize(gt, [32, 32]).flatten(1), resize(images, [32, 32]).flatten(1))


def test_shuffled_conditioning_brings_the_upper_bound_to_chance(decoding):
    _, true = decoding.identification(decoding.tokens)
    _, shuffled = decoding.identification(decoding.tokens[others(len(decoding.tokens))])
    assert true > 0.65, true                                  # measured: .766
    assert abs(shuffled - 0.5) < 0.12, shuffled               # measured: .428


def test_guidance_zero_ignores_the_tokens(decoding):
    """With guidance 0 only the unconditional branch (noise tokens) is used: the output changes
    and no longer identifies its image."""
    guided, true = decoding.identification(decoding.tokens)
    unguided, blind = decoding.identification(decoding.tokens, guidance=0.0)
    assert not torch.allclose(guided, unguided, atol=0.05)
    assert blind < true - 0.15 and blind < 0.62, (true, blind)   # measured: .455 against .766


def test_decoder_prefers_its_own_token_space(run, decoding):
    """The same images' tokens of the other space (before ln_post) decode worse, scored as
    check_decoder scores them (fmri_recon.evaluate.decoder_check) on 24 images; check_decoder's own verdict
    on its 8 does not name the wrong space."""
    from fmri_recon.evaluate import decoder_check
    from fmri_recon.targets import clip_targets

    attrs = decoding.cache.attrs
    visual = clip_targets.load_vision(attrs["arch"], run / "weights/random/open_clip/bigG.safetensors", "cpu",
                                      torch.float32)
    scores = decoder_check.score_spaces(visual, decoding.decoder, decoding.gt, zero_one_quirk=bool(attrs["zero_one_quirk"]),
                                        seed=0, decode={**DECODE, "guidance": 5.0})
    # measured: .764 from its own space's tokens, .708 from the other's
    assert scores[attrs["token_norm"]]["two_way"] > scores["pre_ln_post"]["two_way"] + 0.03, scores
    snakemake(run, "checks/decoder_token_space.json", configs=(DEMO,))
    report = json.loads((run / "checks/decoder_token_space.json").read_text())
    assert report["expects"] in (None, "post_ln_post"), report["report"]


def test_refinement_keeps_the_content(run):
    """Refinement at upstream's strength keeps what the reconstruction shows: the refined images
    stay close to their reconstructions (not replaced by noise)."""
    recons = score.load_pt(run / "evals/lite_bigG/lite_bigG_all_recons.pt").float()
    refined = score.load_pt(run / "evals/lite_bigG/lite_bigG_all_enhancedrecons.pt").float()
    assert image_metrics.pixcorr(recons, refined) > 0.5
    assert image_metrics.pixcorr(recons, refined) > image_metrics.pixcorr(recons, refined[others(len(refined))]) + 0.2
