"""How sure a prediction is: the folds' disagreement and the entropy of the probabilities.

Pure numpy on arrays the predictor already has: each fold's labels of a case (an ensemble's)
and the probabilities it decoded (one sigmoid per region output, or a softmax over classes).

* :func:`pairwise_dice`: the mean Dice over every pair of the folds' masks of a region. 1
  when they agree voxel for voxel (or when there is one mask), 0 when no two overlap.
* :func:`entropy_map`: the per-voxel entropy in bits, normalized to [0, 1]: of a softmax,
  ``H(p) / log2(K)``; of region sigmoids, the mean over the outputs of the binary entropy.
  0 where every output is 0 or 1, 1 where every output is 0.5 (or a softmax is uniform).
* :func:`uncertainty_score`: ``(1 - pairwise Dice of the whole tumour) + mean entropy inside
  the predicted tumour``, in [0, 2]: what a reviewer sorts a cohort's cases by. A case with
  no tumour predicted has no voxels inside; its entropy term is then the mean over the whole
  volume (small when the model is sure there is nothing).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

KINDS: Final = ("regions", "softmax")
"""What the probabilities are: one independent sigmoid per region output, or a softmax."""


def pairwise_dice(masks: Sequence[npt.NDArray[np.bool_]]) -> float:
    """Mean Dice over every pair of ``masks`` (same shape); 1.0 for fewer than two masks,
    and for a pair that is empty on both sides."""
    if len(masks) < 2:
        return 1.0
    flat = [np.asarray(m, dtype=bool).ravel() for m in masks]
    if len({m.size for m in flat}) != 1:
        raise ValueError(f"masks of different sizes: {sorted({m.size for m in flat})}")
    sizes = [int(m.sum()) for m in flat]
    scores = []
    for i, j in itertools.combinations(range(len(flat)), 2):
        total = sizes[i] + sizes[j]
        both = int(np.count_nonzero(flat[i] & flat[j]))
        scores.append(1.0 if total == 0 else 2.0 * both / total)
    return float(np.mean(scores))


def entropy_map(probabilities: npt.ArrayLike, kind: str = "regions") -> npt.NDArray[np.float32]:
    """``(K, D, H, W)`` probabilities -> ``(D, H, W) float32`` normalized entropy in [0, 1]
    (module docstring).

    Raises:
        ValueError: an unknown ``kind``, or not a ``(K, ...)`` array with ``K >= 1`` (``>= 2``
            for a softmax).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if p.ndim < 2 or p.shape[0] < (2 if kind == "softmax" else 1):
        raise ValueError(f"probabilities of shape {p.shape}: expected (K, ...) for a {kind}")
    if kind == "softmax":
        bits = -np.sum(_xlog2x(p), axis=0) / np.log2(p.shape[0])
    else:
        bits = -np.mean(_xlog2x(p) + _xlog2x(1.0 - p), axis=0)
    return np.clip(bits, 0.0, 1.0).astype(np.float32)


def mean_entropy(
    probabilities: npt.ArrayLike, inside: npt.NDArray[np.bool_], kind: str = "regions"
) -> float:
    """The mean of :func:`entropy_map` over the voxels of ``inside`` (the predicted tumour),
    or over the whole volume when ``inside`` is empty."""
    bits = entropy_map(probabilities, kind)
    mask = np.asarray(inside, dtype=bool)
    if mask.shape != bits.shape:
        raise ValueError(f"mask of shape {mask.shape} for probabilities of {bits.shape}")
    return float(bits[mask].mean() if mask.any() else bits.mean())


def uncertainty_score(agreement: float, entropy: float) -> float:
    """``(1 - agreement) + entropy``: the folds' disagreement plus the mean entropy inside
    the predicted tumour, in [0, 2] (higher: look first)."""
    if not (0.0 <= agreement <= 1.0 and 0.0 <= entropy <= 1.0):
        raise ValueError(f"agreement {agreement} and entropy {entropy} must be in [0, 1]")
    return (1.0 - agreement) + entropy


def _xlog2x(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x log2 x`` with ``0 log 0 = 0``."""
    out = np.zeros_like(x)
    positive = x > 0
    out[positive] = x[positive] * np.log2(x[positive])
    return out
