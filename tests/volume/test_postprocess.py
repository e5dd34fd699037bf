"""Small-ET relabeling, component rules chosen on validation, region volumes
(brats.volume.postprocess)."""

import numpy as np
import pytest

from brats.volume.labels import ED, ET, NCR, REGIONS, region_mask
from brats.volume.metrics import dice
from brats.volume.postprocess import (
    CANDIDATE_RULES,
    VOLUME_RULES,
    Postprocessing,
    choose_postprocessing,
    region_volumes_ml,
    small_et_to_necrosis,
)


def test_small_enhancing_components_become_necrosis():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = ET  # 216 voxels: kept
    labels[15, 15, 15] = ET  # a speck: necrosis
    labels[12:14, 2:4, 2:4] = ED
    out = small_et_to_necrosis(labels, 10)
    assert out[15, 15, 15] == NCR and (out[2:8, 2:8, 2:8] == ET).all()
    assert (out[12:14, 2:4, 2:4] == ED).all()
    assert labels[15, 15, 15] == ET  # the input is left as it was
    np.testing.assert_array_equal(small_et_to_necrosis(labels, 0), labels)
    diagonal = np.zeros((4, 4, 4), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = ET  # not face-connected: two specks
    assert not (small_et_to_necrosis(diagonal, 2) == ET).any()


def test_region_volumes_in_ml():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels.flat[:10] = NCR
    labels.flat[10:30] = ED
    labels.flat[30:35] = ET
    volumes = region_volumes_ml(labels, (1.0, 2.0, 0.5))  # 1 mm^3 voxels
    assert volumes == pytest.approx({"WT": 0.035, "TC": 0.015, "ET": 0.005})
    assert region_volumes_ml(labels, (2.0, 2.0, 2.0))["WT"] == pytest.approx(0.28)
    assert region_volumes_ml(np.zeros((3, 3, 3), np.uint8), (1, 1, 1)) == {
        "WT": 0.0,
        "TC": 0.0,
        "ET": 0.0,
    }


def _blob(labels, corner, side, value):
    x, y, z = corner
    labels[x : x + side, y : y + side, z : z + side] = value


def test_rules_remove_components_into_the_region_around_them():
    labels = np.zeros((24, 24, 24), np.uint8)
    _blob(labels, (2, 2, 2), 8, ED)
    _blob(labels, (4, 4, 4), 4, NCR)
    _blob(labels, (5, 5, 5), 2, ET)
    _blob(labels, (15, 15, 15), 2, ED)  # a second, small lesion
    _blob(labels, (8, 8, 8), 1, ET)  # an ET speck inside the edema
    largest_wt = Postprocessing({"WT": "largest"}).apply(labels)
    assert (largest_wt[15:17, 15:17, 15:17] == 0).all()
    np.testing.assert_array_equal(largest_wt[:12, :12, :12], labels[:12, :12, :12])
    small_et = Postprocessing({"ET": 2}).apply(labels)
    assert small_et[8, 8, 8] == NCR and (small_et[5:7, 5:7, 5:7] == ET).all()
    tc = np.zeros_like(labels)
    _blob(tc, (2, 2, 2), 6, ED)
    _blob(tc, (3, 3, 3), 1, NCR)
    assert Postprocessing({"TC": 2}).apply(tc)[3, 3, 3] == ED  # core removed: edema remains
    none = Postprocessing()
    assert none.apply(labels) is labels
    assert Postprocessing.from_dict({"ET": 5, "WT": "largest"}).to_dict() == {
        "WT": "largest",
        "ET": 5,
    }
    for bad in ({"XX": 3}, {"WT": 0}, {"ET": "smallest"}, {"TC": True}):
        with pytest.raises(ValueError):
            Postprocessing(bad)


def _cases_with_a_false_positive_island():
    """Three (predicted, true) pairs: one true lesion each, predicted exactly, plus a
    27-voxel false-positive island."""
    cases = []
    for shift in range(3):
        truth = np.zeros((24, 24, 24), np.uint8)
        _blob(truth, (2 + shift, 3, 3), 8, ED)
        pred = truth.copy()
        _blob(pred, (18, 18, 18 - shift), 3, ED)
        cases.append((pred, truth))
    return cases


def test_a_rule_is_chosen_only_when_it_raises_validation_dice():
    cases = _cases_with_a_false_positive_island()
    chosen, scores = choose_postprocessing(cases)
    assert chosen.rules.get("WT") is not None
    for pred, truth in cases:
        assert dice(region_mask(chosen.apply(pred), "WT"), region_mask(truth, "WT")) == 1.0
    assert scores["WT"] == pytest.approx(1.0)
    # When the truth has the second lesion too, removing it would hurt: no rule.
    multifocal = [(pred, pred.copy()) for pred, _ in cases]
    kept, kept_scores = choose_postprocessing(multifocal)
    assert "WT" not in kept.rules and kept_scores["WT"] == pytest.approx(1.0)


def test_among_rules_of_equal_validation_dice_the_one_that_removes_least_wins():
    # Every rule that removes the 27-voxel island scores the same on validation; the first
    # of them (at least 30 voxels) keeps a second focus of 64 voxels, "largest" would not.
    chosen, _ = choose_postprocessing(_cases_with_a_false_positive_island())
    assert chosen.rules == {"WT": 30}
    multifocal = np.zeros((24, 24, 24), np.uint8)
    _blob(multifocal, (2, 3, 3), 8, ED)
    _blob(multifocal, (16, 16, 16), 4, ED)
    np.testing.assert_array_equal(chosen.apply(multifocal), multifocal)


def test_the_chosen_scores_are_the_dice_of_the_applied_rules():
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(4):
        truth = np.zeros((16, 16, 16), np.uint8)
        _blob(truth, tuple(rng.integers(0, 6, 3)), 8, ED)
        _blob(truth, tuple(rng.integers(3, 6, 3)), 4, ET)
        noise = rng.random(truth.shape) < 0.02
        pred = truth.copy()
        pred[noise] = rng.integers(1, 4, int(noise.sum()))
        cases.append((pred, truth))
    chosen, scores = choose_postprocessing(cases)
    for region in REGIONS:
        expected = np.mean(
            [dice(region_mask(chosen.apply(p), region), region_mask(t, region)) for p, t in cases]
        )
        assert scores[region] == pytest.approx(expected)
    assert chosen.rules  # scattered specks: some rule helps


def _cores(et_voxels: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Tumours whose truth has no enhancement (a necrotic core in edema) and whose prediction
    adds a small ET blob of each side, plus two enhancing tumours predicted right."""
    cases = []
    for side in et_voxels:
        truth = np.zeros((24, 24, 24), np.uint8)
        _blob(truth, (4, 4, 4), 12, ED)
        _blob(truth, (8, 8, 8), 4, NCR)
        pred = truth.copy()
        _blob(pred, (8, 8, 8), side, ET)
        cases.append((pred, truth))
    for _ in range(2):
        truth = np.zeros((24, 24, 24), np.uint8)
        _blob(truth, (4, 4, 4), 12, ED)
        _blob(truth, (7, 7, 7), 6, ET)
        cases.append((truth.copy(), truth))
    return cases


def test_a_small_enhancing_volume_becomes_core_below_a_threshold_chosen_on_the_cases():
    cases = _cores((2, 3))  # 8 and 27 voxels of ET where there is none; true ET is 216
    chosen, scores = choose_postprocessing(cases, (*CANDIDATE_RULES, *VOLUME_RULES))
    assert chosen.rules["ET"] == 30  # the first rule that removes both specks
    whole, _ = choose_postprocessing(cases, VOLUME_RULES)
    assert whole.rules["ET"] == "below:30" and scores["ET"] == pytest.approx(1.0)
    relabelled = whole.apply(cases[1][0])
    assert (
        not (relabelled == ET).any()
        and (relabelled == NCR).sum() == (cases[1][0] == NCR).sum() + 27
    )
    assert Postprocessing.from_dict({"ET": "below:300"}).to_dict() == {"ET": "below:300"}
    for bad in ("below:0", "below:x", "under:3"):
        with pytest.raises(ValueError, match="below:<voxels>"):
            Postprocessing.from_dict({"ET": bad})


def test_lesion_wise_choice_counts_a_small_lesion_as_much_as_a_false_positive_speck():
    # Case A: two true enhancing lesions, one of 8 voxels, both predicted right. Case B: a
    # true 27-voxel lesion predicted right plus a false 8-voxel speck. Dropping components
    # under 10 voxels loses A's small lesion and clears B's speck. By volume Dice that is a
    # gain (8 of 520 voxels lost, 8 of 35 wrong removed); lesion-wise (4 mm voxels: every
    # lesion is scored) A falls from 1 to 1/2 and B rises from 1/2 to 1: no gain, no rule.
    a = np.zeros((24, 24, 24), np.uint8)
    _blob(a, (2, 2, 2), 8, ET)
    _blob(a, (18, 18, 18), 2, ET)
    b_truth = np.zeros((24, 24, 24), np.uint8)
    _blob(b_truth, (4, 4, 4), 3, ET)
    b_pred = b_truth.copy()
    _blob(b_pred, (16, 16, 16), 2, ET)
    cases = [(a.copy(), a), (b_pred, b_truth)]
    by_volume, _ = choose_postprocessing(cases, (10,))
    by_lesion, scores = choose_postprocessing(cases, (10,), spacings=[(4.0, 4.0, 4.0)] * 2)
    assert by_volume.rules and not by_lesion.rules
    assert scores["ET"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="1 spacings for 2 cases"):
        choose_postprocessing(cases, (10,), spacings=[(1.0, 1.0, 1.0)])
