"""Which CLIP token space the unCLIP decoder expects: a check to run before a day of training.

The ground-truth tokens of a few test images, taken in each token space (before and after
``ln_post``, fmri_recon.targets.clip_targets), go through the decoder; each decoded set is scored
against its images by two-way identification of their pixels (64 x 64, model-free: unCLIP fed
ground-truth tokens reaches PixCorr .68, paper Table 9), with the cosine similarity of the CLIP
model's image embeddings reported beside it. A decoder trained on one space reconstructs its
images from that space's tokens and not from the other's, so the space that scores clearly
higher is the one it expects; if the config's ``targets.token_norm`` is the other, the check
fails and says so.
"""
from __future__ import annotations

import logging

import torch

from fmri_recon.targets import clip_targets
from fmri_recon.resize import resize
from fmri_recon.evaluate.metrics.image import two_way_identification

log = logging.getLogger(__name__)
# A verdict needs the better space clearly above chance and clearly above the other (chance 0.5;
# with 8 images a decoder that ignores its tokens scores 0.5 +- 0.1 in either space).
CLEAR, MARGIN = 0.75, 0.15


def score_spaces(visual, decoder, images, *, zero_one_quirk: bool, seed: int, decode: dict) -> dict:
    """{space: {"two_way", "clip_similarity"}} of the decoder fed each space's tokens of ``images``."""
    size = visual.image_size[0] if isinstance(visual.image_size, (tuple, list)) else visual.image_size
    dtype = next(visual.parameters()).dtype

    def embed(x):
        with torch.no_grad():
            return clip_targets.encode_both(visual, clip_targets.preprocess(x, size, zero_one_quirk).to(dtype))

    def pixels(x):
        return resize(x.float().cpu(), [64, 64]).flatten(1)

    truth = embed(images)
    scores = {}
    for space in clip_targets.TOKEN_NORMS:
        decoded = decoder.decode(truth[space].float(), generator=torch.Generator().manual_seed(seed), **decode)
        pooled = embed(decoded.to(images.device))["pooled"].float()
        cosine = torch.nn.functional.cosine_similarity(pooled, truth["pooled"].float()).mean()
        scores[space] = {"two_way": two_way_identification(pixels(images), pixels(decoded)),
                         "clip_similarity": float(cosine)}
    return scores


def verdict(scores: dict, configured: str, n_images: int) -> tuple[str | None, str]:
    """(the space the decoder expects or None, the one-line report)."""
    (a, sa), (b, sb) = sorted(scores.items(), key=lambda kv: -kv[1]["two_way"])
    detail = (f"pixel two-way identification {sa['two_way']:.2f} from {a} tokens vs {sb['two_way']:.2f} from {b} "
              f"({n_images} test images, chance 0.5)")
    if sa["two_way"] < CLEAR or sa["two_way"] - sb["two_way"] < MARGIN:
        return None, (f"decoder token space: no clear preference ({detail}); an untrained decoder "
                      f"(weights: random) shows none. targets.token_norm is {configured}.")
    agrees = "agrees" if a == configured else "DISAGREES: set targets.token_norm: " + a
    return a, f"decoder expects {a} tokens: {detail}; targets.token_norm = {configured} {agrees}"
