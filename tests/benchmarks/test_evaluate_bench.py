"""The evaluation benchmark on small pairs: both sides score the same labels, and the figures
it reports are there (its speed is measured by running it, never here)."""

from __future__ import annotations

import numpy as np

from brats.benchmarks.evaluate import EvaluateBenchmark, label_pair, run


def test_label_pairs_have_hits_misses_and_false_positives():
    pred, truth = label_pair(np.random.default_rng(0), (64, 64, 48), 3)
    assert set(np.unique(truth)) == {0, 1, 2, 3} and pred.dtype == np.uint8
    assert np.any((pred > 0) & (truth == 0)) and np.any((truth > 0) & (pred == 0))


def test_ours_and_monai_agree_on_dice_and_the_figures_are_reported():
    figures = run(EvaluateBenchmark(cases=2, shape=(96, 96, 72), lesions=3, repeats=1))
    assert figures["largest_dice_difference"] < 1e-6
    assert set(figures["seconds_per_case"]) == {"ours", "monai"}
    assert figures["ours_over_monai"] > 0
    counts = figures["lesion_counts"]
    for region in ("WT", "TC", "ET"):  # every region has hits, misses and false positives
        assert min(counts[f"lesion_{kind}_{region}"] for kind in ("tp", "fp", "fn")) >= 1
