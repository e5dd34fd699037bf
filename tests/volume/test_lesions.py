"""Lesion-wise Dice/HD95, NSD, sensitivity and specificity on hand-built masks, and against a
direct transcription of the BraTS 2023 reference algorithm on random blobs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brats.volume.labels import BRATS2023, MEN2023, MET2023
from brats.volume.lesions import (
    GLIOMA,
    MENINGIOMA,
    METASTASIS,
    LesionSettings,
    lesion_scores,
    region_settings,
)
from brats.volume.metrics import METRIC_KEYS, evaluate_case, hd95, specificity
from brats.volume.surfaces import normalized_surface_dice
from tests.helpers import cube, empty_mask

ONE_MM = (1.0, 1.0, 1.0)


def test_two_lesions_whose_dilations_touch_are_one_lesion():
    truth = cube(cube(empty_mask(), (5, 5, 5), 5), (5, 5, 14), 5)  # 4 voxels apart
    pred = truth.copy()
    merged = lesion_scores(pred, truth, ONE_MM, GLIOMA)  # 3 + 3 >= 4: one lesion
    assert (merged.tp, merged.fp, merged.fn) == (1, 0, 0)
    assert merged.dice == 1.0 and merged.hd95 == 0.0
    apart = lesion_scores(pred, truth, ONE_MM, LesionSettings(dilation=1, min_volume_mm3=2))
    assert (apart.tp, apart.fp, apart.fn) == (2, 0, 0)
    # One predicted lesion only: merged, it is half the lesion; apart, the other is missed.
    half = cube(empty_mask(), (5, 5, 5), 5)
    assert lesion_scores(half, truth, ONE_MM, GLIOMA).dice == pytest.approx(2 * 125 / 375)
    missed = lesion_scores(half, truth, ONE_MM, LesionSettings(dilation=1, min_volume_mm3=2))
    assert (missed.tp, missed.fn) == (1, 1) and missed.dice == pytest.approx(0.5)
    assert missed.hd95 == pytest.approx(374.0 / 2)


def test_a_false_positive_blob_costs_a_whole_lesion_whatever_its_size():
    truth = cube(empty_mask(), (5, 5, 5), 6)
    pred = truth.copy()
    pred[30, 30, 30] = True  # one voxel, far away
    scores = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 0)
    assert scores.dice == pytest.approx(0.5)
    assert scores.hd95 == pytest.approx(374.0 / 2)
    # Near enough to touch the lesion's dilated mask, the same voxel is part of the match.
    pred[30, 30, 30] = False
    pred[5, 5, 13] = True  # 3 voxels beyond the lesion's face
    near = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (near.tp, near.fp) == (1, 0) and near.dice == pytest.approx(2 * 216 / (216 + 217))


def test_a_missed_lesion_scores_zero_and_the_penalty():
    truth = cube(cube(empty_mask(), (2, 2, 2), 6), (28, 28, 28), 6)
    pred = cube(empty_mask(), (2, 2, 2), 6)
    scores = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (scores.tp, scores.fp, scores.fn) == (1, 0, 1)
    assert scores.dice == pytest.approx(0.5) and scores.hd95 == pytest.approx(187.0)
    custom = lesion_scores(pred, truth, ONE_MM, LesionSettings(penalty_mm=100.0))
    assert custom.hd95 == pytest.approx(50.0)


def test_a_tiny_truth_lesion_is_dropped_and_so_is_its_match():
    truth = cube(cube(empty_mask(), (2, 2, 2), 8), (30, 30, 30), 3)  # 27 mm^3 <= 50
    pred = cube(empty_mask(), (2, 2, 2), 8)
    scores = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (scores.tp, scores.fp, scores.fn, scores.dice) == (1, 0, 0, 1.0)
    # A prediction on the tiny lesion is neither scored nor a false positive.
    pred[31, 31, 31] = True
    assert lesion_scores(pred, truth, ONE_MM, GLIOMA) == scores
    # With the metastasis threshold (2 mm^3) the tiny lesion counts.
    small = lesion_scores(pred, truth, ONE_MM, METASTASIS)
    assert (small.tp, small.fp, small.fn) == (2, 0, 0)
    assert small.dice == pytest.approx((1.0 + 2 / 28) / 2)


def test_volumes_and_distances_use_the_spacing():
    truth = cube(empty_mask(), (10, 10, 10), 3)  # 27 voxels
    pred = np.roll(truth, 1, axis=2)
    at_1mm = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (at_1mm.tp, at_1mm.fp, at_1mm.fn) == (0, 0, 0) and at_1mm.dice == 1.0
    thick = (1.0, 1.0, 3.0)  # 81 mm^3: kept
    at_3mm = lesion_scores(pred, truth, thick, GLIOMA)
    assert (at_3mm.tp, at_3mm.fp, at_3mm.fn) == (1, 0, 0)
    assert at_3mm.dice == pytest.approx(2 * 18 / 54)
    assert at_3mm.hd95 == pytest.approx(hd95(pred, truth, thick))
    assert hd95(pred, truth, thick) == pytest.approx(3.0)
    assert normalized_surface_dice(pred, truth, thick, 1.0) < 1.0
    assert normalized_surface_dice(pred, truth, ONE_MM, 1.0) == 1.0


@pytest.mark.parametrize(
    ("has_pred", "has_truth", "expected"),
    [
        (False, False, (1.0, 0.0, 0, 0, 0)),
        (True, False, (0.0, 374.0, 0, 1, 0)),
        (False, True, (0.0, 374.0, 0, 0, 1)),
    ],
)
def test_empty_masks(has_pred, has_truth, expected):
    blob = cube(empty_mask(), (10, 10, 10), 6)
    pred = blob if has_pred else empty_mask()
    truth = blob if has_truth else empty_mask()
    s = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert (s.dice, s.hd95, s.tp, s.fp, s.fn) == expected
    nsd = normalized_surface_dice(pred, truth, ONE_MM)
    assert nsd == (1.0 if not (has_pred or has_truth) else 0.0)


def test_one_prediction_can_match_two_lesions():
    truth = cube(cube(empty_mask(), (5, 5, 5), 4), (5, 5, 20), 4)
    pred = np.zeros_like(truth)
    pred[5:9, 5:9, 5:24] = True  # a bar across both
    s = lesion_scores(pred, truth, ONE_MM, LesionSettings(dilation=1, min_volume_mm3=2))
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    bar, lesion = int(pred.sum()), 64
    assert s.dice == pytest.approx(2 * lesion / (lesion + bar))


def test_nsd_counts_surface_within_the_tolerance():
    truth = cube(empty_mask(), (10, 10, 10), 10)
    shifted = np.roll(truth, 2, axis=0)
    assert normalized_surface_dice(truth, truth, ONE_MM) == 1.0
    assert normalized_surface_dice(shifted, truth, ONE_MM, 1.0) < 1.0
    assert normalized_surface_dice(shifted, truth, ONE_MM, 2.0) == 1.0


def test_specificity_counts_the_whole_volume():
    truth = cube(empty_mask((10, 10, 10)), (0, 0, 0), 5)  # 125 voxels
    pred = truth.copy()
    pred[9, 9, 9] = True  # one FP among 875 negatives
    assert specificity(pred, truth, 1000) == pytest.approx(874 / 875)
    assert specificity(truth, truth, 125) == 1.0


def test_evaluate_case_carries_every_new_key_per_region():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[5:15, 5:15, 5:15] = 2
    truth[8:12, 8:12, 8:12] = 3
    pred = truth.copy()
    pred[25, 25, 25] = 3  # an ET (and TC, WT) false positive
    metrics = evaluate_case(pred, truth)
    assert list(metrics) == list(METRIC_KEYS)
    for region in ("WT", "TC", "ET"):
        assert metrics[f"lesion_fp_{region}"] == 1.0 and metrics[f"lesion_tp_{region}"] == 1.0
        assert metrics[f"lesion_dice_{region}"] == pytest.approx(0.5)
        assert metrics[f"sensitivity_{region}"] == 1.0
        assert 0.99 < metrics[f"specificity_{region}"] < 1.0
        assert 0.99 < metrics[f"dice_{region}"] < 1.0  # one voxel hardly moves the old Dice


# --- the 2023 challenges' settings ----------------------------------------------------

# rachitsaluja/BraTS-2023-Metrics, eval.py, get_LesionWiseResults:
#     if challenge_name == 'BraTS-GLI':   dilation_factor = 3; lesion_volume_thresh = 50
#     elif challenge_name == 'BraTS-SSA': dilation_factor = 3; lesion_volume_thresh = 50
#     elif challenge_name == 'BraTS-MEN': dilation_factor = 1; lesion_volume_thresh = 50
#     elif challenge_name == 'BraTS-PED': dilation_factor = 3; lesion_volume_thresh = 50
#     elif challenge_name == 'BraTS-MET': dilation_factor = 1; lesion_volume_thresh = 2
# and, for every challenge, metric_df.replace(np.inf, 374) and len(fp)*374 (the penalty).
_EVAL_PY_2023 = {
    "BraTS-GLI": ("glioma", 3, 50.0),
    "BraTS-SSA": ("glioma", 3, 50.0),
    "BraTS-MEN": ("meningioma", 1, 50.0),
    "BraTS-PED": ("glioma", 3, 50.0),  # 2023's paediatric labels are the glioma's
    "BraTS-MET": ("metastasis", 1, 2.0),
}


@pytest.mark.parametrize("challenge", sorted(_EVAL_PY_2023))
def test_the_2023_settings_are_the_2023_evaluation_code_s(challenge):
    task, dilation, threshold = _EVAL_PY_2023[challenge]
    for region in ("WT", "TC", "ET"):
        s = region_settings(task, "brats2023", region)
        assert (s.dilation, s.min_volume_mm3, s.penalty_mm) == (dilation, threshold, 374.0)
        assert (s.merge_predictions, s.min_prediction_voxels, s.false_positives) == (False, 0, True)
    assert region_settings("meningioma", "brats2023", "ET") is MENINGIOMA
    # BraTS-2024-Metrics has no pre-operative meningioma code: 2024 keeps the 2023 settings.
    assert region_settings("meningioma", "brats2024", "WT") is MENINGIOMA


def _met_case() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((40, 40, 40), np.uint8)
    truth[5:8, 5:8, 5:8] = 3  # a 27 mm^3 metastasis, missed
    truth[20:30, 20:30, 20:30] = 3  # 1000 mm^3, found
    pred = np.zeros_like(truth)
    pred[20:30, 20:30, 20:30] = 3
    return pred, truth


def test_a_missed_small_metastasis_counts_under_met2023_and_vanished_as_glioma():
    pred, truth = _met_case()
    met = evaluate_case(pred, truth, ONE_MM, scheme=MET2023)
    assert (met["lesion_tp_ET"], met["lesion_fn_ET"], met["lesion_fp_ET"]) == (1, 1, 0)
    assert met["lesion_dice_ET"] == pytest.approx(0.5)
    assert met["lesion_hd95_ET"] == pytest.approx(374 / 2)
    glioma = evaluate_case(pred, truth, ONE_MM, scheme=BRATS2023)  # 27 <= 50 mm^3: dropped
    assert (glioma["lesion_tp_ET"], glioma["lesion_fn_ET"], glioma["lesion_dice_ET"]) == (1, 0, 1)
    assert met["dice_ET"] == glioma["dice_ET"]  # the same labels: only lesion-wise differs


def test_men2023_keeps_lesions_a_glioma_dilation_would_merge():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[5:10, 5:10, 5:10] = 3
    truth[5:10, 5:10, 14:19] = 3  # 4 voxels apart: one lesion at dilation 3, two at 1
    pred = truth.copy()
    pred[5:10, 5:10, 14:19] = 0
    men = evaluate_case(pred, truth, ONE_MM, scheme=MEN2023)
    assert (men["lesion_tp_ET"], men["lesion_fn_ET"], men["lesion_dice_ET"]) == (1, 1, 0.5)
    glioma = evaluate_case(pred, truth, ONE_MM, scheme=BRATS2023)
    assert (glioma["lesion_tp_ET"], glioma["lesion_fn_ET"]) == (1, 0)


# --- against the reference algorithm ----------------------------------------------------


def _reference(pred: np.ndarray, truth: np.ndarray, spacing, dil: int, thresh: float):
    """The BraTS 2023 algorithm as its reference code runs it: whole volumes, one dilation
    per lesion, matches found lesion by lesion."""
    element = ndimage.generate_binary_structure(3, 2)
    full = ndimage.generate_binary_structure(3, 3)
    gt_cc, _ = ndimage.label(truth, structure=full)
    dilated = ndimage.binary_dilation(truth, structure=element, iterations=dil) if dil else truth
    dil_cc, n = ndimage.label(dilated, structure=full)
    combined = np.where(gt_cc > 0, dil_cc, 0)
    pred_cc, _ = ndimage.label(pred, structure=full)
    voxel = float(np.prod(spacing))
    matched_any: set[int] = set()
    dices, hds, tp, fn = [], [], 0, 0
    for comp in range(1, n + 1):
        lesion = combined == comp
        grown = (
            ndimage.binary_dilation(lesion, structure=element, iterations=dil) if dil else lesion
        )
        hits = set(np.unique(pred_cc[grown]).tolist()) - {0}
        matched_any |= hits
        if lesion.sum() * voxel <= thresh:
            continue
        union = np.isin(pred_cc, list(hits))
        if hits:
            tp += 1
            dices.append(2 * (union & lesion).sum() / (union.sum() + lesion.sum()))
            hds.append(hd95(union, lesion, spacing))
        else:
            fn += 1
            dices.append(0.0)
            hds.append(374.0)
    fp = len(set(np.unique(pred_cc).tolist()) - {0} - matched_any)
    if len(dices) + fp == 0:
        return 1.0, 0.0, 0, 0, 0
    return sum(dices) / (len(dices) + fp), (sum(hds) + 374 * fp) / (len(dices) + fp), tp, fp, fn


def _blobs(rng: np.random.Generator, shape, n: int) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    mask = noise > np.quantile(noise, 1 - n / 100)
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_reference_algorithm_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape = (36, 32, 28)
    truth = _blobs(rng, shape, 3)
    pred = truth ^ (_blobs(rng, shape, 2) & (rng.random(shape) < 0.7))
    spacing = (1.0, 1.0, 1.0) if seed % 2 else (1.0, 1.2, 2.0)
    wide = LesionSettings(dilation=5, min_volume_mm3=5)  # cells wider than 8 voxels
    for settings in (
        GLIOMA,
        METASTASIS,
        MENINGIOMA,
        LesionSettings(dilation=0, min_volume_mm3=5),
        wide,
    ):
        got = lesion_scores(pred, truth, spacing, settings)
        want = _reference(pred, truth, spacing, settings.dilation, settings.min_volume_mm3)
        assert (got.tp, got.fp, got.fn) == want[2:]
        assert got.dice == pytest.approx(want[0], abs=1e-12)
        assert got.hd95 == pytest.approx(want[1], abs=1e-9)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="dilation"):
        LesionSettings(dilation=-1)
    with pytest.raises(ValueError, match="min_volume_mm3"):
        LesionSettings(min_volume_mm3=float("nan"))
