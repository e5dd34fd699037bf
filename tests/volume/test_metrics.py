"""Exact per-case metrics against hand-computed cases and a brute-force HD95."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from brats.volume.labels import to_disk, to_internal
from brats.volume.metrics import (
    METRIC_KEYS,
    dice,
    evaluate_case,
    hausdorff,
    hd95,
    iou,
    precision,
    recall,
    surface,
    surface_distances,
    volume_diagonal,
)


def _cube(shape: tuple[int, int, int], lo: int, hi: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros(shape, dtype=bool)
    mask[lo:hi, lo:hi, lo:hi] = True
    return mask


def _brute_force_hd(
    pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_], spacing: tuple[float, ...], q: float
) -> float:
    """All-pairs distances between surface voxel coordinates (in mm): slow and obviously right."""
    p = np.argwhere(surface(pred)) * np.asarray(spacing)
    t = np.argwhere(surface(truth)) * np.asarray(spacing)
    pairwise = np.sqrt(((p[:, None, :] - t[None, :, :]) ** 2).sum(axis=-1))
    union = np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])
    return float(np.percentile(union, q))


def test_concentric_cubes_overlap_counts() -> None:
    truth = _cube((20, 20, 20), 5, 15)  # 10^3 = 1000 voxels
    pred = _cube((20, 20, 20), 7, 13)  # 6^3 = 216 voxels, inside truth
    assert dice(pred, truth) == pytest.approx(2 * 216 / (1000 + 216))
    assert iou(pred, truth) == pytest.approx(216 / 1000)
    assert precision(pred, truth) == 1.0
    assert recall(pred, truth) == pytest.approx(0.216)


def test_concentric_cubes_surface_distances() -> None:
    truth = _cube((20, 20, 20), 5, 15)
    pred = _cube((20, 20, 20), 7, 13)
    forward, backward = surface_distances(pred, truth, (1.0, 1.0, 1.0))
    # Every surface voxel of the inner cube sits exactly two voxels inside a face of the outer.
    assert forward.size == 6**3 - 4**3
    np.testing.assert_allclose(forward, 2.0)
    # The outer cube's corners are furthest: (5,5,5) -> (7,7,7).
    assert backward.size == 10**3 - 8**3
    assert backward.max() == pytest.approx(math.sqrt(12))
    assert backward.min() == pytest.approx(2.0)
    assert hausdorff(pred, truth, (1, 1, 1), percentile=100) == pytest.approx(math.sqrt(12))


def test_identical_masks() -> None:
    mask = _cube((16, 16, 16), 3, 9)
    assert dice(mask, mask) == 1.0
    assert hd95(mask, mask, (1, 1, 1)) == 0.0


def test_parallel_slabs_and_anisotropic_spacing() -> None:
    truth = np.zeros((12, 12, 12), dtype=bool)
    pred = np.zeros_like(truth)
    truth[2:10, 2:10, 5] = True
    pred[2:10, 2:10, 8] = True
    # One-voxel-thick slabs: every voxel is surface and its nearest partner is 3 voxels away
    # along axis 2, so every surface distance is 3 voxels of axis-2 spacing.
    assert hd95(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(pred, truth, (1.0, 1.0, 3.0)) == pytest.approx(9.0)
    assert hd95(pred, truth, (3.0, 2.0, 1.0)) == pytest.approx(3.0)
    assert dice(pred, truth) == 0.0


def test_single_voxels_distance_in_mm() -> None:
    truth = np.zeros((10, 10, 10), dtype=bool)
    pred = np.zeros_like(truth)
    truth[5, 5, 5] = True
    pred[5, 9, 1] = True
    assert hd95(pred, truth, (1, 1, 1)) == pytest.approx(math.sqrt(16 + 16))
    assert hd95(pred, truth, (2.0, 0.5, 1.5)) == pytest.approx(math.sqrt(4 + 36))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0), (0.7, 1.3, 2.1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force_on_random_shapes(
    spacing: tuple[float, float, float], seed: int
) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    # Smoothed noise thresholded: blobby shapes with holes and several components.
    truth = ndimage.gaussian_filter(rng.random((12, 12, 12)), 1.0) > 0.52
    pred = ndimage.gaussian_filter(rng.random((12, 12, 12)), 1.2) > 0.5
    assert truth.any() and pred.any()
    for q in (95.0, 100.0, 50.0):
        expected = _brute_force_hd(pred, truth, spacing, q)
        assert hausdorff(pred, truth, spacing, percentile=q) == pytest.approx(expected, abs=1e-9)


def test_hd95_bounding_box_crop_handles_masks_touching_the_border() -> None:
    rng = np.random.default_rng(7)
    truth = rng.random((12, 12, 12)) > 0.8
    pred = np.zeros_like(truth)
    pred[0:4, 8:12, 0:12] = True
    expected = _brute_force_hd(pred, truth, (1.0, 2.0, 1.0), 95.0)
    assert hd95(pred, truth, (1.0, 2.0, 1.0)) == pytest.approx(expected)


def test_volume_diagonal_of_a_brats_volume() -> None:
    assert volume_diagonal((240, 240, 155), (1, 1, 1)) == pytest.approx(373.13, abs=0.01)


def test_empty_rules() -> None:
    empty = np.zeros((24, 24, 16), dtype=bool)
    full = empty.copy()
    full[10:14, 10:14, 7:10] = True
    for fn in (dice, iou, precision, recall):
        assert fn(empty, empty) == 1.0
        assert fn(empty, full) == 0.0
        assert fn(full, empty) == 0.0
    assert hd95(empty, empty, (1, 1, 1)) == 0.0
    assert hd95(full, empty, (1, 1, 2)) == pytest.approx(math.sqrt(24**2 + 24**2 + 32**2))
    assert hd95(empty, full, (1, 1, 2)) == pytest.approx(math.sqrt(24**2 + 24**2 + 32**2))
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(empty, full, (1, 1, 1))


def test_one_empty_brats_volume_scores_its_diagonal() -> None:
    empty = np.zeros((240, 240, 155), dtype=bool)
    tumour = empty.copy()
    tumour[100:110, 100:110, 70:80] = True
    assert hd95(empty, tumour, (1, 1, 1)) == pytest.approx(373.13, abs=0.01)
    assert hd95(tumour, empty, (1, 1, 1)) == pytest.approx(373.13, abs=0.01)


def test_evaluate_case_keys_and_values() -> None:
    truth = np.zeros((16, 16, 16), dtype=np.uint8)
    truth[2:12, 2:12, 2:12] = 2  # edema
    truth[4:10, 4:10, 4:10] = 1  # necrotic core inside
    truth[6:8, 6:8, 6:8] = 3  # enhancing inside the core
    pred = truth.copy()
    pred[2:12, 2:12, 11] = 0  # miss one edema slab
    out = evaluate_case(pred, truth, (1.0, 1.0, 1.0))
    assert tuple(out) == METRIC_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert out["dice_ET"] == 1.0 and out["hd95_ET"] == 0.0
    assert out["dice_TC"] == 1.0 and out["dice_class1"] == 1.0
    wt = 1000
    assert out["dice_WT"] == pytest.approx(2 * (wt - 100) / (2 * wt - 100))
    assert out["recall_class2"] == pytest.approx((1000 - 216 - 100) / (1000 - 216))
    assert out["precision_class2"] == 1.0
    assert out["accuracy"] == pytest.approx(1 - 100 / 16**3)
    assert out["hd95_WT"] > 0.0


def test_evaluate_case_empty_tumour_is_perfect_not_nan() -> None:
    zeros = np.zeros((8, 8, 8), dtype=np.uint8)
    out = evaluate_case(zeros, zeros, (1, 1, 1))
    zero = ("hd95", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn")
    for key, value in out.items():
        assert value == (0.0 if key.startswith(zero) else 1.0), key


def test_evaluate_case_missed_region_scores_the_diagonal() -> None:
    truth = np.zeros((8, 8, 8), dtype=np.uint8)
    truth[2:4, 2:4, 2:4] = 3
    pred = np.zeros_like(truth)
    out = evaluate_case(pred, truth, (1, 1, 2))
    assert out["dice_ET"] == 0.0
    assert out["hd95_ET"] == pytest.approx(math.sqrt(8**2 + 8**2 + 16**2))
    assert out["precision_class3"] == 0.0 and out["recall_class3"] == 0.0
    assert out["dice_class1"] == 1.0  # absent in both


def test_both_disk_conventions_give_the_same_metrics() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, size=(12, 12, 12)).astype(np.uint8)
    pred = rng.integers(0, 4, size=(12, 12, 12)).astype(np.uint8)
    results = []
    for convention in ("brats2020", "brats2023"):
        disk_truth, disk_pred = to_disk(truth, convention), to_disk(pred, convention)
        results.append(
            evaluate_case(
                to_internal(disk_pred, convention), to_internal(disk_truth, convention), (1, 1, 1)
            )
        )
    assert 4 in to_disk(truth, "brats2020")
    assert results[0] == results[1]


def test_evaluate_case_rejects_bad_input() -> None:
    ok = np.zeros((8, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        evaluate_case(ok, np.zeros((8, 8, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match="to_internal"):
        evaluate_case(ok + 4, ok)
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(ok, ok, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        evaluate_case(ok, ok, (1.0, 1.0))
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        evaluate_case(ok[0], ok[0])


def test_full_size_case_is_fast_enough() -> None:
    # A 240 x 240 x 155 case with a realistic tumour: HD95 runs on the tumour's bounding box.
    import time

    truth = np.zeros((240, 240, 155), dtype=np.uint8)
    truth[90:150, 90:150, 50:100] = 2
    truth[105:135, 105:135, 60:90] = 1
    truth[112:128, 112:128, 70:80] = 3
    pred = np.roll(truth, 2, axis=0)
    start = time.perf_counter()
    out = evaluate_case(pred, truth, (1, 1, 1))
    elapsed = time.perf_counter() - start
    assert 0.0 < out["hd95_WT"] <= 2.0
    assert elapsed < 10.0, elapsed


def test_evaluate_case_agrees_with_the_pieces_on_the_full_volume() -> None:
    from brats.volume.labels import region_mask

    rng = np.random.default_rng(11)
    truth = np.zeros((20, 18, 16), dtype=np.uint8)
    pred = np.zeros_like(truth)
    truth[5:12, 4:10, 6:12] = rng.integers(0, 4, size=(7, 6, 6))
    pred[6:14, 3:9, 5:10] = rng.integers(0, 4, size=(8, 6, 5))
    spacing = (1.0, 0.8, 2.5)
    out = evaluate_case(pred, truth, spacing)
    for region in ("WT", "TC", "ET"):
        p, t = region_mask(pred, region), region_mask(truth, region)
        assert out[f"dice_{region}"] == dice(p, t)
        assert out[f"hd95_{region}"] == pytest.approx(_brute_force_hd(p, t, spacing, 95.0))
    for c in (1, 2, 3):
        assert out[f"iou_class{c}"] == iou(pred == c, truth == c)
    assert out["accuracy"] == pytest.approx(float(np.mean(pred == truth)))


def test_case_without_et_predicted_with_et_scores_zero_and_the_diagonal() -> None:
    # A 2020 case with no enhancing tumour (no label 4 on disk).
    disk_truth = np.zeros((10, 12, 8), dtype=np.uint8)
    disk_truth[2:8, 2:8, 2:6] = 2
    disk_truth[4:6, 4:6, 3:5] = 1
    truth = to_internal(disk_truth, "brats2020")
    pred = truth.copy()
    pred[4, 4, 3] = 3  # one false enhancing voxel inside the core
    out = evaluate_case(pred, truth, (1.0, 1.0, 2.5))
    assert out["dice_ET"] == 0.0
    assert out["hd95_ET"] == pytest.approx(math.sqrt(10**2 + 12**2 + 20**2))
    assert out["precision_class3"] == 0.0 and out["recall_class3"] == 0.0
    assert out["dice_TC"] == 1.0 and out["dice_WT"] == 1.0 and out["hd95_TC"] == 0.0
    assert all(math.isfinite(v) for v in out.values())


def test_surface_is_the_mask_minus_its_6_neighbour_erosion_with_an_empty_border() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    faces = ndimage.generate_binary_structure(3, 1)
    for shape in ((1, 1, 1), (1, 6, 5), (2, 3, 4), (30, 20, 10)):
        for _ in range(4):
            mask = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0) > 0
            eroded = ndimage.binary_erosion(mask, structure=faces, border_value=0)
            np.testing.assert_array_equal(surface(mask), mask & ~eroded)


def test_surface_distances_are_those_of_a_distance_transform() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(4)
    for spacing in ((1.0, 1.0, 1.0), (0.8, 1.0, 2.5)):
        a = ndimage.gaussian_filter(rng.standard_normal((20, 18, 12)), 1.2) > 0.3
        b = ndimage.gaussian_filter(rng.standard_normal((20, 18, 12)), 1.2) > 0.3
        forward, backward = surface_distances(a, b, spacing)
        to_b = ndimage.distance_transform_edt(~surface(b), sampling=spacing)[surface(a)]
        to_a = ndimage.distance_transform_edt(~surface(a), sampling=spacing)[surface(b)]
        np.testing.assert_allclose(forward, to_b, atol=1e-9)
        np.testing.assert_allclose(backward, to_a, atol=1e-9)


def test_the_2024_lesion_metric_regroups_tissues_and_drops_specks_per_scheme() -> None:
    """evaluate_case under brats2024 gives each single-tissue glioma region the cross-tissue
    figures of brats.volume.lesions, and a 3-voxel predicted speck is a false positive under
    the 2023 rules but dropped under 2024's (glioma: predictions of 20 voxels or fewer)."""
    from brats.volume.lesions import tissue_lesion_scores

    truth = np.zeros((32, 32, 24), np.uint8)
    truth[6:18, 6:18, 4:16] = 2  # SNFH
    truth[9:15, 9:15, 7:13] = 3  # ET
    truth[11:13, 11:13, 9:11] = 1  # NETC
    truth[20:26, 20:26, 14:20] = 4  # a cavity
    pred = truth.copy()
    pred[29:31, 0:1, 21:23] = 4  # a 4-voxel speck of cavity, far from every lesion
    new = evaluate_case(pred, truth, (1, 1, 1), scheme="gli2024", lesion_metric="brats2024")
    old = evaluate_case(pred, truth, (1, 1, 1), scheme="gli2024", lesion_metric="brats2023")
    assert old["lesion_fp_RC"] == 1.0 and old["lesion_dice_RC"] == pytest.approx(0.5)
    assert new["lesion_fp_RC"] == 0.0 and new["lesion_dice_RC"] == 1.0
    names = {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
    direct = tissue_lesion_scores(
        {n: pred == v for n, v in names.items()},
        {n: truth == v for n, v in names.items()},
        (1, 1, 1),
        "glioma",
    )
    for region, scores in direct.items():
        assert new[f"lesion_dice_{region}"] == scores.dice
        assert new[f"lesion_hd95_{region}"] == scores.hd95
        assert new[f"lesion_tp_{region}"] == scores.tp


def _whole_volume_2024(pred: np.ndarray, truth: np.ndarray, names: dict[str, int]) -> dict:
    """tissue_lesion_scores of glioma labels on the uncropped volumes."""
    from brats.volume.lesions import tissue_lesion_scores

    tissues = ("NETC", "SNFH", "ET", "RC")
    return tissue_lesion_scores(
        {n: pred == names[n] if n in names else np.zeros(pred.shape, bool) for n in tissues},
        {n: truth == names[n] if n in names else np.zeros(truth.shape, bool) for n in tissues},
        (1, 1, 1),
        "glioma",
    )


def test_regrouping_crops_with_the_partner_tissues_dilation() -> None:
    """brats2023 labels (dilation 3 in every region of their own) under the 2024 rules: ET is
    regrouped through NETC, dilated by 5, so the crop keeps 5 + 1 voxels, not 3 + 1. A tighter
    crop cuts NETC B's dilated mask, which then begins before NETC A's in raster order: E2
    would join E1's group and its miss go unseen."""
    truth = np.zeros((30, 45, 40), np.uint8)
    truth[10:12, 30:32, 10:12] = 1  # NETC A: the lowest x of anything labelled
    truth[11:13, 10:12, 10:32] = 1  # NETC B: one x further, lower y, long in z
    truth[11:13, 12:30, 10:12] = 3  # ET E1 bridging A and B
    truth[11:13, 12:14, 28:32] = 3  # ET E2 touching B only, far from E1
    pred = truth.copy()
    pred[11:13, 12:14, 28:32] = 0  # E2 missed
    want = _whole_volume_2024(pred, truth, {"NETC": 1, "SNFH": 2, "ET": 3})["ET"]
    assert (want.tp, want.fn) == (1, 1)
    for scheme in ("brats2023", "gli2024"):
        got = evaluate_case(pred, truth, (1, 1, 1), scheme=scheme, lesion_metric="brats2024")
        assert (got["lesion_tp_ET"], got["lesion_fn_ET"]) == (want.tp, want.fn)
        assert got["lesion_dice_ET"] == want.dice and got["lesion_hd95_ET"] == want.hd95


def test_brats2020_core_and_edema_are_regrouped_as_netc_and_snfh() -> None:
    """NCR is NETC and ED is SNFH: the same internal labels score alike under brats2020 and
    brats2023 with the 2024 rules. One core lesion touches two far-apart ET blobs, which are
    therefore one ET lesion, half found."""
    truth = np.zeros((40, 40, 40), np.uint8)
    truth[10:30, 18:22, 18:22] = 1  # the core
    truth[30:34, 18:22, 18:22] = 2  # edema at one end
    truth[8:12, 14:18, 18:22] = 3  # ET near one end of the core
    truth[28:32, 14:18, 18:22] = 3  # ET near the other end
    pred = truth.copy()
    pred[28:32, 14:18, 18:22] = 1  # the second ET blob called core
    want = _whole_volume_2024(pred, truth, {"NETC": 1, "SNFH": 2, "ET": 3})["ET"]
    assert (want.tp, want.fn) == (1, 0)
    old, new = (
        evaluate_case(pred, truth, (1, 1, 1), scheme=s, lesion_metric="brats2024")
        for s in ("brats2020", "brats2023")
    )
    assert old == new
    assert (old["lesion_tp_ET"], old["lesion_fn_ET"]) == (1.0, 0.0)
    assert old["lesion_dice_ET"] == pytest.approx(want.dice)
    assert old["lesion_hd95_ET"] == pytest.approx(want.hd95)


def test_the_nsd_tolerance_alone_changes_no_lesion_wise_rule() -> None:
    """nsd_tolerance_mm reaches NSD and nothing else: the 2024 metastasis rules (truth lesions
    over 2 mm^3) still count a missed 27 mm^3 lesion, which the 2023 glioma default (50 mm^3)
    would leave out."""
    truth = np.zeros((24, 24, 24), np.uint8)
    truth[3:6, 3:6, 3:6] = 3  # ET of met2024, missed
    truth[12:20, 12:20, 12:20] = 3  # found, one voxel short
    pred = np.zeros_like(truth)
    pred[12:20, 12:20, 12:19] = 3
    kw = {"scheme": "met2024", "lesion_metric": "brats2024"}
    default = evaluate_case(pred, truth, (1, 1, 1), **kw)
    tight = evaluate_case(pred, truth, (1, 1, 1), nsd_tolerance_mm=0.5, **kw)
    assert tight["lesion_fn_ET"] == default["lesion_fn_ET"] == 1.0
    assert {k: v for k, v in tight.items() if not k.startswith("nsd_")} == {
        k: v for k, v in default.items() if not k.startswith("nsd_")
    }
    assert tight["nsd_ET"] < default["nsd_ET"]
    with pytest.raises(ValueError, match="nsd_tolerance_mm"):
        evaluate_case(pred, truth, (1, 1, 1), nsd_tolerance_mm=float("nan"), **kw)
