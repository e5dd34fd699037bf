"""How sure a prediction is: the folds' disagreement and the entropy of the probabilities.

Pure numpy on arrays the predictor already has: each fold's labels of a case (an ensemble's)
and the probabilities it decoded (one sigmoid per region output, or a softmax over classes).

* :func:`pairwise_dice`: the mean Dice over every pair of the folds' masks of a region. 1
  when they agree voxel for voxel (or when there is one mask), 0 when no two overlap.
* :func:`entropy_map`: the per-voxel entropy in bits, normalized to [0, 1]: of a softmax,
  ``H(p) / log2(K)``; of region sigmoids, the mean over the outputs of the binary entropy.
  0 where every output is 0 or 1, 1 where every output is 0.5 (or a softmax is uniform).
  What ``--save-uncertainty`` writes: every region's doubt, voxel by voxel.
* :func:`foreground_probability` and :func:`tumour_entropy`: the probability that a voxel is
  tumour at all, and the mean of its binary entropy over the tumour the folds predict (the
  union of their masks). This is the entropy the score takes: the same question as the
  folds' agreement (where is the tumour?), asked of the probabilities, over the whole band
  the folds dispute, not only its inner half. (The mean of every output's entropy inside
  the ensemble's mask mixes in the core's and the enhancing tumour's doubt, which says
  little about the whole tumour's error.)
* :func:`uncertainty_score`: ``(1 - pairwise Dice of the tumour) + tumour entropy``, in
  [0, 2]: what a reviewer sorts a cohort's cases by. A case with no tumour predicted has no
  voxels inside; its entropy term is then the mean over the whole volume (small when the
  model is sure there is nothing).
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
        bits = np.mean(_binary_entropy(p), axis=0)
    return np.clip(bits, 0.0, 1.0).astype(np.float32)


def foreground_probability(
    probabilities: npt.ArrayLike, kind: str = "regions", outer: Sequence[int] = (0,)
) -> npt.NDArray[np.float32]:
    """``(K, D, H, W)`` probabilities -> ``(D, H, W) float32``, the probability of any
    tumour class: of a softmax, ``1 - p(background)``; of region sigmoids, the sum of the
    ``outer`` outputs (the regions no other output contains,
    :attr:`~brats.volume.labels.LabelScheme.outer_outputs`: WT, or WT and the resection
    cavity, whose classes are disjoint), clipped to [0, 1].

    Raises:
        ValueError: an unknown ``kind``, not a ``(K, ...)`` array, or ``outer`` empty or
            naming an output the array does not have.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = np.clip(np.asarray(probabilities, dtype=np.float32), 0.0, 1.0)
    if p.ndim < 2:
        raise ValueError(f"probabilities of shape {p.shape}: expected (K, ...)")
    if kind == "softmax":
        return np.asarray(1.0 - p[0], dtype=np.float32)
    if not outer or not all(0 <= i < p.shape[0] for i in outer):
        raise ValueError(f"outer outputs {tuple(outer)} for {p.shape[0]} outputs")
    return np.clip(p[list(outer)].sum(axis=0), 0.0, 1.0).astype(np.float32)


def tumour_entropy(foreground: npt.ArrayLike, inside: npt.NDArray[np.bool_]) -> float:
    """The mean normalized binary entropy of :func:`foreground_probability` over the voxels
    of ``inside`` (the union of the folds' predicted tumours), or over the whole volume when
    ``inside`` is empty; in [0, 1]."""
    p = np.clip(np.asarray(foreground, dtype=np.float64), 0.0, 1.0)
    mask = np.asarray(inside, dtype=bool)
    if mask.shape != p.shape:
        raise ValueError(f"mask of shape {mask.shape} for probabilities of {p.shape}")
    values = p[mask] if mask.any() else p.ravel()
    return float(np.clip(_binary_entropy(values).mean(), 0.0, 1.0)) if values.size else 0.0


def uncertainty_score(agreement: float, entropy: float) -> float:
    """``(1 - agreement) + entropy``: the folds' disagreement plus the tumour's entropy
    (:func:`tumour_entropy`), in [0, 2] (higher: look first)."""
    if not (0.0 <= agreement <= 1.0 and 0.0 <= entropy <= 1.0):
        raise ValueError(f"agreement {agreement} and entropy {entropy} must be in [0, 1]")
    return (1.0 - agreement) + entropy


def _binary_entropy(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``H(p)`` in bits of each probability in [0, 1] (1 at 0.5, 0 at 0 and 1)."""
    return -(_xlog2x(p) + _xlog2x(1.0 - p))


def _xlog2x(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """``x log2 x`` with ``0 log 0 = 0``."""
    out = np.zeros_like(x)
    positive = x > 0
    out[positive] = x[positive] * np.log2(x[positive])
    return out
