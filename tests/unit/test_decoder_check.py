"""check_decoder: the token space a decoder expects, told from what it reconstructs."""
import pytest
import torch

from fmri_recon.evaluate import decoder_check
from fmri_recon.targets import clip_targets

# smooth images that differ from each other (low-resolution noise, upsampled)
IMAGES = torch.nn.functional.interpolate(torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)),
                                         size=(224, 224), mode="bilinear")


@pytest.fixture(scope="module")
def visual(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "bigG.safetensors"
    clip_targets.save_random_clip("tiny-ViT-bigG-14", path, seed=1)
    return clip_targets.load_vision("tiny-ViT-bigG-14", path, "cpu", torch.float32)


class OneSpaceDecoder:
    """Gives back the image whose tokens in ``space`` it is fed; anything else decodes to noise."""

    def __init__(self, visual, space):
        with torch.no_grad():
            self.known = clip_targets.encode_both(visual, clip_targets.preprocess(IMAGES, 224))[space]

    def decode(self, tokens, generator=None, **kw):
        out = torch.rand(len(tokens), 3, 64, 64, generator=generator)
        for i, t in enumerate(tokens):
            match = [k for k in range(len(self.known)) if torch.allclose(t, self.known[k], atol=1e-4)]
            if match:
                out[i] = torch.nn.functional.interpolate(IMAGES[match[0]][None], size=(64, 64))[0]
        return out


@pytest.mark.parametrize("space", clip_targets.TOKEN_NORMS)
def test_the_space_a_decoder_reconstructs_from_is_found(visual, space):
    scores = decoder_check.score_spaces(visual, OneSpaceDecoder(visual, space), IMAGES, zero_one_quirk=True, seed=0,
                                        decode={})
    other = next(s for s in clip_targets.TOKEN_NORMS if s != space)
    assert scores[space]["two_way"] > 0.9 and scores[space]["two_way"] > scores[other]["two_way"] + 0.2
    expected, line = decoder_check.verdict(scores, "post_ln_post", len(IMAGES))
    assert expected == space and f"decoder expects {space} tokens" in line
    assert ("agrees" in line) == (space == "post_ln_post") and ("DISAGREES" in line) == (space != "post_ln_post")


def test_a_decoder_that_ignores_its_tokens_gives_no_verdict(visual):
    class Noise:
        def decode(self, tokens, generator=None, **kw):
            return torch.rand(len(tokens), 3, 64, 64, generator=generator)

    scores = decoder_check.score_spaces(visual, Noise(), IMAGES, zero_one_quirk=True, seed=0, decode={})
    expected, line = decoder_check.verdict(scores, "post_ln_post", len(IMAGES))
    assert expected is None and "no clear preference" in line
