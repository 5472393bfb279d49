"""300-way top-1 retrieval between image and brain embeddings (docs/upstream.md §5.8).

Direction names, and how they map onto upstream and the paper
-------------------------------------------------------------
``sim[i, j] = cos(image_i, brain_j)`` (rows: images, columns: brains).

* ``image_to_brain``: for each image ``i``, is ``argmax_j sim[i, j] == i``, i.e. is its
  own brain embedding the nearest among the drawn brain embeddings.  Upstream computes
  ``fwd_sim = batchwise_cosine_similarity(brain, image)``; that helper returns
  ``S[i, j] = cos(B_i, Z_j)`` for arguments ``(Z, B)``, so ``fwd_sim[i, j] = cos(image_i,
  brain_j)`` and ``topk`` takes the argmax along each *image* row over the brains.  This is
  upstream's **"fwd"**, and the number the paper's tables report as **"Image retrieval"**.
* ``brain_to_image``: for each brain embedding ``j``, is ``argmax_i sim[i, j] == j``.
  Upstream's **"bwd"** (``bcs(image, brain)``: rows are brains), reported by the paper as
  **"Brain retrieval"**.

The paper's wording reads the other way round ("image retrieval" sounds like "given a
brain, find the image"), but to compare with the published numbers one must copy the
code's orientation: Image retrieval = ``image_to_brain``, Brain retrieval =
``brain_to_image``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PAPER_NAMES", "UPSTREAM_NAMES", "retrieval", "topk_matches"]

PAPER_NAMES = {"image_to_brain": "Image retrieval", "brain_to_image": "Brain retrieval"}
UPSTREAM_NAMES = {"image_to_brain": "fwd", "brain_to_image": "bwd"}


def topk_matches(sim: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Boolean ``(n,)``: whether column ``i`` is among the ``k`` largest entries of row ``i``.

    Same as upstream ``utils.topk`` before averaging (``k`` is capped at the number of
    columns).  Exact ties are broken by ``torch.topk``'s order, as upstream's ``argsort``
    breaks them by its own: constructed tests should avoid ties.
    """
    sim = torch.as_tensor(sim)
    if sim.ndim != 2 or sim.shape[0] > sim.shape[1]:
        raise ValueError(f"topk_matches: expected (n, m) similarities with n <= m, got {tuple(sim.shape)}")
    k = max(1, min(int(k), sim.shape[1]))
    top = sim.topk(k, dim=1).indices                                    # (n, k)
    labels = torch.arange(sim.shape[0], device=sim.device)[:, None]
    return (top == labels).any(dim=1)


def _flat_normalised(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"{what}: expected embeddings (N, ...), got shape {tuple(x.shape)}")
    return F.normalize(x.reshape(len(x), -1).float(), dim=-1)


def retrieval(image_emb: Any, brain_emb: Any, n_draws: int = 30, draw_size: int = 300,
              seed: int = 42) -> dict[str, Any]:
    """Top-1 retrieval accuracy in both directions over ``n_draws`` random subsets.

    ``image_emb`` and ``brain_emb`` are ``(N, ...)`` (upstream: bigG tokens of the ground
    truth images and the brain model's CLIP-voxel output, ``(N, 256, 1664)``), row ``i``
    of each belonging to test image ``i``.  Each draw picks ``draw_size`` of the ``N``
    items without replacement (``numpy.random.RandomState(seed)``; upstream uses the global
    ``np.random.choice``), flattens and L2-normalises both, and scores top-1 accuracy:

    * ``image_to_brain``: upstream "fwd", the paper's **"Image retrieval"**;
    * ``brain_to_image``: upstream "bwd", the paper's **"Brain retrieval"**
      (see the module docstring for why).

    When ``N < draw_size`` each draw uses all ``N`` items, and the returned ``draw_size``
    is ``N`` (``draw_size_requested`` keeps the argument); ``chance = 1 / draw_size``.

    Returns ``image_to_brain``, ``brain_to_image`` (means over draws, fractions),
    ``image_to_brain_ci95``, ``brain_to_image_ci95`` (half-widths ``1.96 * SEM``, SEM with
    ``ddof=1``; NaN for a single draw), the per-draw lists ``image_to_brain_draws`` /
    ``brain_to_image_draws``, and ``n_draws``, ``draw_size``, ``draw_size_requested``,
    ``n_items``, ``chance``.
    """
    img = _flat_normalised(image_emb, "image_emb")
    brn = _flat_normalised(brain_emb, "brain_emb")
    if len(img) != len(brn):
        raise ValueError(f"image_emb and brain_emb differ in number of items: {len(img)} vs {len(brn)}")
    n = len(img)
    if n < 2:
        raise ValueError("retrieval needs at least 2 items")
    if n_draws < 1 or draw_size < 2:
        raise ValueError("retrieval needs n_draws >= 1 and draw_size >= 2")
    size = min(int(draw_size), n)

    rng = np.random.RandomState(seed)
    i2b, b2i = [], []
    for _ in range(n_draws):
        idx = torch.from_numpy(rng.choice(n, size=size, replace=False))
        sim = img[idx] @ brn[idx].T                      # sim[i, j] = cos(image_i, brain_j)
        i2b.append(topk_matches(sim, k=1).float().mean().item())
        b2i.append(topk_matches(sim.T, k=1).float().mean().item())

    def ci95(values: list[float]) -> float:
        if len(values) < 2:
            return float("nan")
        return float(1.96 * np.std(values, ddof=1) / np.sqrt(len(values)))

    return {
        "image_to_brain": float(np.mean(i2b)),
        "brain_to_image": float(np.mean(b2i)),
        "image_to_brain_ci95": ci95(i2b),
        "brain_to_image_ci95": ci95(b2i),
        "image_to_brain_draws": i2b,
        "brain_to_image_draws": b2i,
        "n_draws": int(n_draws),
        "draw_size": size,
        "draw_size_requested": int(draw_size),
        "n_items": n,
        "chance": 1.0 / size,
    }
