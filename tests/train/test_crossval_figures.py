"""The out-of-fold figures and their log line, for every built-in label scheme (pure numpy:
the cases are drawn here, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from brats.train.crossval import choose_oof_postprocessing, oof_summary
from brats.volume.labels import SCHEMES


def _case(rng: np.random.Generator, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A truth with one blob of each class, and a prediction that misses a slab of it."""
    truth = np.zeros((20, 20, 20), np.uint8)
    for value in range(1, n_classes + 1):
        corner = rng.integers(1, 14, size=3)
        z, y, x = (slice(int(c), int(c) + 5) for c in corner)
        truth[z, y, x] = value
    predicted = truth.copy()
    predicted[:, :, : int(rng.integers(2, 6))] = 0
    return predicted, truth


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_scheme_gets_its_out_of_fold_figures_and_one_line_saying_them(name):
    scheme = SCHEMES[name]
    rng = np.random.default_rng(3)
    cases = [(f"case-{i}", *_case(rng, len(scheme.classes)), (1.0, 1.0, 1.0)) for i in range(3)]
    rules, figures = choose_oof_postprocessing(cases, scheme)
    assert figures["oof_cases"] == 3
    assert {f"oof_dice_{r}" for r in scheme.regions} <= set(figures)
    lesion = [r for r in scheme.regions if f"oof_lesion_dice_{r}" in figures]
    assert lesion, f"{name}: no region scored lesion-wise"
    line = oof_summary(rules, figures, scheme)
    for region in scheme.regions:  # every region's Dice, and lesion-wise where it is scored
        assert f"{region} {figures[f'oof_dice_{region}']:.3f}" in line.split("; lesion-wise")[0]
    assert line.split("lesion-wise Dice ")[1].split() == [
        part for r in lesion for part in (r, f"{figures[f'oof_lesion_dice_{r}']:.3f}")
    ]
