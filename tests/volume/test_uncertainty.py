"""Uncertainty figures against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brats.volume.uncertainty import entropy_map, mean_entropy, pairwise_dice, uncertainty_score


def _cube(corner: int, side: int = 4, shape: int = 12) -> np.ndarray:
    mask = np.zeros((shape, shape, shape), bool)
    mask[corner : corner + side, corner : corner + side, corner : corner + side] = True
    return mask


def test_pairwise_dice_is_one_when_the_folds_agree_and_falls_as_they_part() -> None:
    a = _cube(2)
    assert pairwise_dice([a, a, a]) == 1.0 and pairwise_dice([a]) == 1.0
    assert pairwise_dice([_cube(0), _cube(6)]) == 0.0
    empty = np.zeros_like(a)
    assert pairwise_dice([empty, empty]) == 1.0
    # Shifted by one voxel on each axis: overlap 3^3 of 4^3 + 4^3 -> 54 / 128.
    shifted = _cube(3)
    assert pairwise_dice([a, shifted]) == pytest.approx(54 / 128)
    # Three folds: pairs (a, a) = 1, (a, s) and (a, s) = 54/128.
    assert pairwise_dice([a, a, shifted]) == pytest.approx((1 + 2 * 54 / 128) / 3)
    with pytest.raises(ValueError, match="different sizes"):
        pairwise_dice([a, a[:4]])


def test_entropy_is_zero_when_sure_and_one_at_even_odds() -> None:
    sure = np.stack([np.ones((2, 2, 2)), np.zeros((2, 2, 2))])
    np.testing.assert_array_equal(entropy_map(sure), 0.0)
    np.testing.assert_allclose(entropy_map(np.full((3, 2, 2, 2), 0.5)), 1.0)
    # One output at p = 0.25 and one sure: the mean of H(0.25) and 0.
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    mixed = np.stack([np.full((1, 1, 1), 0.25), np.ones((1, 1, 1))])
    assert float(entropy_map(mixed)[0, 0, 0]) == pytest.approx(h / 2)
    uniform = np.full((4, 1, 1, 1), 0.25)
    assert float(entropy_map(uniform, "softmax")[0, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        entropy_map(uniform, "logits")
    with pytest.raises(ValueError, match="expected"):
        entropy_map(np.full((1, 2, 2), 0.5), "softmax")


def test_mean_entropy_counts_the_predicted_tumour_and_the_score_adds_disagreement() -> None:
    p = np.zeros((1, 4, 4, 4))
    p[0, :2] = 0.5  # unsure in the upper half
    inside = np.zeros((4, 4, 4), bool)
    inside[:2] = True
    assert mean_entropy(p, inside) == pytest.approx(1.0)
    assert mean_entropy(p, ~inside) == pytest.approx(0.0)
    assert mean_entropy(p, np.zeros_like(inside)) == pytest.approx(0.5)  # whole volume
    with pytest.raises(ValueError, match="mask of shape"):
        mean_entropy(p, inside[:2])
    assert uncertainty_score(1.0, 0.0) == 0.0 and uncertainty_score(0.25, 0.5) == 1.25
    with pytest.raises(ValueError, match="must be in"):
        uncertainty_score(1.5, 0.0)
