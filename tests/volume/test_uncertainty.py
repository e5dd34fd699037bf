"""Uncertainty figures against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brats.volume.labels import SCHEMES
from brats.volume.uncertainty import (
    entropy_map,
    foreground_probability,
    pairwise_dice,
    tumour_entropy,
    uncertainty_score,
)


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


def test_the_tumour_entropy_is_of_the_foreground_over_its_mask_and_the_score_adds_disagreement():
    p = np.zeros((4, 4, 4))
    p[:2] = 0.5  # unsure in the upper half
    inside = np.zeros((4, 4, 4), bool)
    inside[:2] = True
    assert tumour_entropy(p, inside) == pytest.approx(1.0)
    assert tumour_entropy(p, ~inside) == pytest.approx(0.0)
    assert tumour_entropy(p, np.zeros_like(inside)) == pytest.approx(0.5)  # whole volume
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert tumour_entropy(np.full((2, 2, 2), 0.25), np.ones((2, 2, 2), bool)) == pytest.approx(h)
    with pytest.raises(ValueError, match="mask of shape"):
        tumour_entropy(p, inside[:2])
    assert uncertainty_score(1.0, 0.0) == 0.0 and uncertainty_score(0.25, 0.5) == 1.25
    with pytest.raises(ValueError, match="must be in"):
        uncertainty_score(1.5, 0.0)


def test_the_foreground_is_the_outer_regions_or_all_but_the_background() -> None:
    # WT sure, TC and ET at even odds: the tumour is certain, its core is not. The score's
    # entropy sees a sure tumour; the per-voxel map (every output) does not.
    regions = np.stack([np.ones((2, 2, 2)), np.full((2, 2, 2), 0.5), np.full((2, 2, 2), 0.5)])
    brats = SCHEMES["brats2020"]
    fg = foreground_probability(regions, "regions", brats.outer_outputs)
    np.testing.assert_array_equal(fg, 1.0)
    assert tumour_entropy(fg, np.ones((2, 2, 2), bool)) == 0.0
    assert float(entropy_map(regions).mean()) == pytest.approx(2 / 3)
    # A post-treatment scheme: WT and the cavity are disjoint; a voxel split between them is
    # surely tumour-or-cavity.
    gli = SCHEMES["gli2024"]
    assert [gli.output_regions[i] for i in gli.outer_outputs] == ["WT", "RC"]
    split = np.zeros((4, 1, 1, 1))
    split[0], split[3] = 0.5, 0.5
    assert float(foreground_probability(split, "regions", gli.outer_outputs)[0, 0, 0]) == 1.0
    assert [SCHEMES[n].output_regions[i] for n in ("ped2024", "menrt2024")
            for i in SCHEMES[n].outer_outputs] == ["WT", "GTV"]  # fmt: skip
    # A softmax: 1 - p(background).
    soft = np.stack([np.full((1, 1, 1), 0.7), np.full((1, 1, 1), 0.2), np.full((1, 1, 1), 0.1)])
    assert float(foreground_probability(soft, "softmax")[0, 0, 0]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="outer outputs"):
        foreground_probability(regions, "regions", (3,))
    with pytest.raises(ValueError, match="kind must be one of"):
        foreground_probability(regions, "logits")
