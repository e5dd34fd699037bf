"""BraTS 2024 lesion-wise scoring: hand-built cases, the per-task settings, and a direct
transcription of the 2024 reference code (``rachitsaluja/BraTS-2024-Metrics``: metrics_GLI.py
at 9e8879a, metrics_MET.py at b04e5a0, metrics_PED.py at 7fa0b9e, metrics_MEN_RT.py at
bc6308f) compared with ours on random blobs. The transcription keeps the reference's steps and
numbers; cc3d's 26-connected labelling is ``scipy.ndimage.label`` with a full 3x3x3 structure,
and surface-distance's HD95 is :func:`brats.volume.surfaces.hd95`, as in test_lesions.py."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from brats.volume.lesions import (
    CROSS_TISSUE,
    GLIOMA,
    LESION_METRICS,
    LESION_TASKS,
    MENINGIOMA,
    METASTASIS,
    LesionScores,
    LesionSettings,
    lesion_scores,
    region_settings,
    tissue_lesion_scores,
)
from brats.volume.surfaces import hd95
from tests.helpers import cube, empty_mask

ONE_MM = (1.0, 1.0, 1.0)
GLI_WT = region_settings("glioma", "brats2024", "WT")
MEN_RT = region_settings("meningioma_rt", "brats2024", "GTV")


def _counts(s: LesionScores) -> tuple[int, int, int]:
    return s.tp, s.fp, s.fn


# --- hand-built cases -------------------------------------------------------------------


def test_a_small_predicted_speck_is_dropped_in_2024_but_a_false_positive_in_2023():
    truth = cube(empty_mask(), (5, 5, 5), 6)
    pred = truth.copy()
    pred[30, 30, 30] = True  # one voxel far away
    old = lesion_scores(pred, truth, ONE_MM, GLIOMA)
    assert _counts(old) == (1, 1, 0) and old.dice == pytest.approx(0.5)
    new = lesion_scores(pred, truth, ONE_MM, GLI_WT)
    assert _counts(new) == (1, 0, 0) and (new.dice, new.hd95) == (1.0, 0.0)
    # 20 voxels are still dropped, 21 are a false positive costing the 2024 penalty, 337.
    pred[30, 30, 30] = False
    pred[30:32, 30:32, 30:35] = True  # 20 voxels
    assert _counts(lesion_scores(pred, truth, ONE_MM, GLI_WT)) == (1, 0, 0)
    pred[33, 30, 30] = True  # a second component, merged by the dilation: 21 voxels
    bigger = lesion_scores(pred, truth, ONE_MM, GLI_WT)
    assert _counts(bigger) == (1, 1, 0)
    assert bigger.dice == pytest.approx(0.5) and bigger.hd95 == pytest.approx(337.0 / 2)
    # ET drops only 10 voxels or fewer: the 20-voxel block alone is a false positive there.
    pred[33, 30, 30] = False
    et = region_settings("glioma", "brats2024", "ET")
    assert _counts(lesion_scores(pred, truth, ONE_MM, et)) == (1, 1, 0)


def test_nearby_predicted_components_are_one_predicted_lesion_in_2024():
    truth = cube(empty_mask(), (5, 5, 5), 6)  # x 5..10
    pred = truth.copy()
    pred[5:8, 5:8, 15:18] = True  # 27 voxels, 4 empty voxels beyond the lesion's face
    old = lesion_scores(pred, truth, ONE_MM, GLIOMA)  # out of the lesion's reach (3)
    assert _counts(old) == (1, 1, 0) and old.dice == pytest.approx(0.5)
    new = lesion_scores(pred, truth, ONE_MM, GLI_WT)  # dilations of 3 + 3 touch: one lesion
    assert _counts(new) == (1, 0, 0)
    assert new.dice == pytest.approx(2 * 216 / (216 + 243))
    assert new.hd95 == pytest.approx(hd95(pred, truth, ONE_MM))
    # Merging comes before the size rule: two specks of 15 voxels far from any lesion are
    # one predicted lesion of 30 voxels, kept, and one false positive, not two (2023).
    specks = truth.copy()
    specks[30:33, 30:35, 30] = True
    specks[30:33, 30:35, 33] = True
    assert _counts(lesion_scores(specks, truth, ONE_MM, GLIOMA)) == (1, 2, 0)
    assert _counts(lesion_scores(specks, truth, ONE_MM, GLI_WT)) == (1, 1, 0)


def test_meningioma_rt_ignores_false_positives_and_charges_the_diagonal():
    truth = cube(empty_mask(), (5, 5, 5), 6)
    pred = truth.copy()
    cube(pred, (30, 30, 30), 4)  # 64 mm^3 > 50: kept, unmatched
    diagonal = math.sqrt(3 * 40**2)
    s = lesion_scores(pred, truth, ONE_MM, MEN_RT, diagonal_mm=diagonal)
    assert _counts(s) == (1, 1, 0) and (s.dice, s.hd95) == (1.0, 0.0)
    assert lesion_scores(pred, truth, ONE_MM, GLIOMA).dice == pytest.approx(0.5)
    # A missed lesion costs the diagonal; the false positive still costs nothing.
    missed = lesion_scores(
        cube(empty_mask(), (30, 30, 30), 4), truth, ONE_MM, MEN_RT, diagonal_mm=9.0
    )
    assert _counts(missed) == (0, 1, 1) and (missed.dice, missed.hd95) == (0.0, 9.0)
    # Nothing kept to score: Dice 1 and HD95 0 whatever was predicted.
    alone = lesion_scores(pred & ~truth, empty_mask(), ONE_MM, MEN_RT, diagonal_mm=9.0)
    assert _counts(alone) == (0, 1, 0) and (alone.dice, alone.hd95) == (1.0, 0.0)
    # The size rule is a volume: 4 x 4 x 3 voxels of 1 x 1 x 1.1 mm are 52.8 mm^3 (kept), of
    # 1 x 1 x 1 mm 48 (dropped), so only the first case has an unmatched lesion.
    block = cube(empty_mask(), (30, 30, 30), 4)
    block[30:34, 30:34, 33] = False
    wide = lesion_scores(block, truth, (1.0, 1.0, 1.1), MEN_RT, diagonal_mm=9.0)
    narrow = lesion_scores(block, truth, ONE_MM, MEN_RT, diagonal_mm=9.0)
    assert (wide.fp, narrow.fp) == (1, 0)
    with pytest.raises(ValueError, match="diagonal_mm"):
        lesion_scores(pred, truth, ONE_MM, MEN_RT)


def test_lesions_touching_one_partner_lesion_are_one_lesion():
    # Two ET lesions 12 voxels apart (dilation 3: two lesions), both touching one NETC bar.
    et = cube(cube(empty_mask(), (10, 10, 5), 4), (10, 10, 21), 4)
    netc = empty_mask()
    netc[10:14, 14:16, 5:25] = True  # beside both
    masks = {"NETC": netc, "SNFH": empty_mask(), "ET": et, "RC": empty_mask()}
    together = tissue_lesion_scores(masks, masks, ONE_MM, "glioma")
    assert set(together) == {"NETC", "SNFH", "ET", "RC"}
    assert _counts(together["ET"]) == (1, 0, 0) and together["ET"].dice == 1.0
    assert _counts(together["NETC"]) == (1, 0, 0)
    assert together["SNFH"] == together["RC"] == LesionScores(1.0, 0.0, 0, 0, 0)
    et_settings = region_settings("glioma", "brats2024", "ET")
    assert _counts(lesion_scores(et, et, ONE_MM, et_settings)) == (2, 0, 0)
    # Predicting only one of the two: regrouped, one half-found lesion; alone, one missed.
    half = {**masks, "ET": cube(empty_mask(), (10, 10, 5), 4)}
    et_half = tissue_lesion_scores(half, masks, ONE_MM, "glioma")["ET"]
    assert _counts(et_half) == (1, 0, 0) and et_half.dice == pytest.approx(2 * 64 / 192)
    assert _counts(lesion_scores(half["ET"], et, ONE_MM, et_settings)) == (1, 0, 1)
    # Metastasis regroups ET through NETC the same way (dilation 1).
    met = tissue_lesion_scores(masks, masks, ONE_MM, "metastasis")
    assert set(met) == {"ET"} and _counts(met["ET"]) == (1, 0, 0)
    with pytest.raises(ValueError, match="RC"):
        tissue_lesion_scores({"NETC": netc, "ET": et}, masks, ONE_MM, "glioma")
    with pytest.raises(ValueError, match="paediatric"):
        tissue_lesion_scores(masks, masks, ONE_MM, "paediatric")


def _two_partners(mirrored: bool) -> dict[str, np.ndarray]:
    """ET lesion E1 touches NETC lesions N1 and N2, ET lesion E2 only N2 (far from E1);
    N1 comes first in raster order, or last when ``mirrored``."""
    netc, et = empty_mask(), empty_mask()
    netc[4:8, 10:14, 2:6] = True  # N1
    netc[24:28, 10:14, 2:26] = True  # N2, long in x
    et[4:28, 14:16, 2:6] = True  # E1, along z beside both
    et[24:28, 14:16, 20:24] = True  # E2, 14 voxels from E1 in x
    if mirrored:
        netc, et = netc[::-1].copy(), et[::-1].copy()
    return {"NETC": netc, "SNFH": empty_mask(), "ET": et, "RC": empty_mask()}


@pytest.mark.parametrize(("mirrored", "et_lesions"), [(False, 2), (True, 1)])
def test_a_lesion_joins_the_group_of_its_first_partner_lesion(mirrored, et_lesions):
    # Reference rule: E1 joins the group of N1, the first partner lesion it touches, and E2
    # that of N2; so E1 and E2 are one lesion only when N2 comes first (no transitive closure).
    masks = _two_partners(mirrored)
    scores = tissue_lesion_scores(masks, masks, ONE_MM, "glioma")
    assert _counts(scores["ET"]) == (et_lesions, 0, 0)
    cc = {name: _combined_by_dilation(mask, _GLI_DILATION[name]) for name, mask in masks.items()}
    reference = _combine_tissues(cc, _GLI_RULES)
    assert int(reference["ET"].max()) == et_lesions
    # Predicting E1 alone: when E1 and E2 are one lesion it is half found, else E2 is missed.
    e1 = masks["ET"].copy()
    e1[:, :, 12:] = False
    pred = {**masks, "ET": e1}
    want = _reference_scores(
        _combine_tissues(
            {n: _drop_small(_combined_by_dilation(m, _GLI_DILATION[n]), _GLI_THRESH[n])
             for n, m in pred.items()},
            _GLI_RULES,
        )["ET"],
        reference["ET"], ONE_MM, 3, 10, 337.0,
    )  # fmt: skip
    _assert_same(tissue_lesion_scores(pred, masks, ONE_MM, "glioma")["ET"], want, "ET")
    assert want[2:] == ((1, 0, 0) if et_lesions == 1 else (1, 0, 1))


def test_partner_lesions_are_numbered_in_raster_order_of_their_dilated_masks():
    # NETC lesion B starts at z 0 and A at z 8, but A lies at lower y: B's dilated mask comes
    # first in raster order. ET lesion E1 touches A and B, E2 only B: both join B's group.
    netc, et = empty_mask(), empty_mask()
    netc[8:11, 2:5, 2:5] = True  # A
    netc[0:3, 22:25, 2:21] = True  # B
    et[0:11, 2:25, 5:7] = True  # E1, beside both
    et[0:3, 25:27, 15:19] = True  # E2, beside B, 8 voxels from E1 in x
    masks = {"NETC": netc, "SNFH": empty_mask(), "ET": et, "RC": empty_mask()}
    cc = {n: _combined_by_dilation(m, _GLI_DILATION[n]) for n, m in masks.items()}
    assert int(_combine_tissues(cc, _GLI_RULES)["ET"].max()) == 1
    assert _counts(tissue_lesion_scores(masks, masks, ONE_MM, "glioma")["ET"]) == (1, 0, 0)


# --- settings ---------------------------------------------------------------------------


def test_region_settings_of_2023_are_the_2023_constants():
    special = {"metastasis": METASTASIS, "meningioma": MENINGIOMA}
    for task in LESION_TASKS:
        for region in ("WT", "TC", "ET", "NETC", "GTV"):
            expected = special.get(task, GLIOMA)
            assert region_settings(task, "brats2023", region) is expected


@pytest.mark.parametrize(
    ("task", "region", "dilation", "truth_mm3", "pred_voxels", "pred_mm3", "penalty", "fp"),
    [
        ("glioma", "WT", 3, 20.0, 20, 0.0, 337.0, True),
        ("glioma", "TC", 3, 20.0, 20, 0.0, 337.0, True),
        ("glioma", "SNFH", 3, 20.0, 20, 0.0, 337.0, True),
        ("glioma", "NETC", 5, 20.0, 20, 0.0, 337.0, True),
        ("glioma", "RC", 5, 20.0, 20, 0.0, 337.0, True),
        ("glioma", "ET", 3, 10.0, 10, 0.0, 337.0, True),
        ("metastasis", "ET", 1, 2.0, 2, 0.0, 374.0, True),
        ("metastasis", "WT", 1, 2.0, 2, 0.0, 374.0, True),
        ("paediatric", "CC", 5, 10.0, 10, 0.0, 374.0, True),
        ("paediatric", "ED", 5, 10.0, 10, 0.0, 374.0, True),
        ("meningioma_rt", "GTV", 1, 50.0, 0, 50.0, None, False),
    ],
)
def test_region_settings_of_2024(
    task, region, dilation, truth_mm3, pred_voxels, pred_mm3, penalty, fp
):
    s = region_settings(task, "brats2024", region)
    assert (s.dilation, s.min_volume_mm3, s.min_prediction_voxels, s.min_prediction_mm3) == (
        dilation,
        truth_mm3,
        pred_voxels,
        pred_mm3,
    )
    assert (s.penalty_mm, s.false_positives, s.merge_predictions) == (penalty, fp, True)


def test_region_settings_reject_unknown_tasks_and_metrics():
    with pytest.raises(ValueError, match="glioma, metastasis, paediatric, meningioma_rt"):
        region_settings("ssa", "brats2024", "WT")
    with pytest.raises(ValueError, match="brats2023, brats2024"):
        region_settings("glioma", "brats2025", "WT")
    assert LESION_METRICS == ("brats2023", "brats2024")


def test_the_tissues_regrouped_and_their_partners_are_the_reference_code_s():
    assert CROSS_TISSUE == {
        "glioma": {  # metrics_GLI.combine_lesions_NETC/_ET/_RC/_SNFH
            "NETC": ("ET", "RC"),
            "ET": ("NETC", "RC"),
            "RC": ("ET", "NETC"),
            "SNFH": ("ET", "RC", "NETC"),
        },
        "metastasis": {"ET": ("NETC",)},  # metrics_MET.combine_lesions_ET
    }


def test_settings_stay_json_ready_and_2023_dicts_unchanged():
    assert GLIOMA.to_dict() == {
        "dilation": 3,
        "min_volume_mm3": 50.0,
        "penalty_mm": 374.0,
        "nsd_tolerance_mm": 1.0,
    }
    assert json.loads(json.dumps(MEN_RT.to_dict())) == {
        "dilation": 1,
        "min_volume_mm3": 50.0,
        "penalty_mm": None,
        "nsd_tolerance_mm": 1.0,
        "merge_predictions": True,
        "min_prediction_mm3": 50.0,
        "false_positives": False,
    }
    with pytest.raises(ValueError, match="min_prediction_voxels"):
        LesionSettings(min_prediction_voxels=-1)
    with pytest.raises(ValueError, match="min_prediction_mm3"):
        LesionSettings(min_prediction_mm3=float("inf"))
    with pytest.raises(ValueError, match="merge_predictions"):
        LesionSettings(merge_predictions=1)


# --- against the reference code ---------------------------------------------------------

_ELEMENT = ndimage.generate_binary_structure(3, 2)
_FULL = ndimage.generate_binary_structure(3, 3)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, _ELEMENT, iterations=iterations) if iterations else mask


def _combined_by_dilation(mask: np.ndarray, dil: int) -> np.ndarray:
    """get_GTseg_combinedByDilation / get_Predseg_combinedByDilation: every component takes
    the number of the dilated component it lies in."""
    cc, _ = ndimage.label(mask, _FULL)
    dilated_cc, n = ndimage.label(_dilate(mask, dil), _FULL)
    out = np.zeros_like(dilated_cc)
    for comp in range(1, n + 1):
        tmp = cc * (dilated_cc == comp)
        np.place(tmp, tmp > 0, comp)
        out += tmp
    return out


def _drop_small(labels: np.ndarray, thresh: float) -> np.ndarray:
    values, counts = np.unique(labels, return_counts=True)
    return np.where(np.isin(labels, values[counts <= thresh], invert=True), labels, 0)


def _touching(img1: np.ndarray, img2: np.ndarray) -> set[tuple[int, int]]:
    """get_touching_labels (its second, symmetric test left out: the element is symmetric)."""
    pairs = set()
    for label1 in np.unique(img1)[1:]:
        dilated1 = ndimage.binary_dilation(img1 == label1, _ELEMENT)
        for label2 in np.unique(img2)[1:]:
            if np.any(dilated1 & (img2 == label2)):
                pairs.add((int(label1), int(label2)))
    return pairs


def _relabel(pairs: set[tuple[int, int]], img: np.ndarray) -> np.ndarray:
    """relabel_nifti_image."""
    current = int(img.max()) + 1
    seen: dict[int, int] = {}
    for _, common in sorted(pairs):
        if common not in seen:
            seen[common] = current
            current += 1
    mapping: dict[int, int] = {}
    for original, common in sorted(pairs):
        if original not in mapping:
            mapping[original] = seen[common]
    out = img.copy()
    for original, new in mapping.items():
        out[img == original] = new
    return out


def _reorder(img: np.ndarray) -> np.ndarray:
    """reorder_labels_nifti: labels 1..n in their order."""
    out = np.zeros_like(img)
    for new, old in enumerate(np.unique(img[img > 0]), start=1):
        out[img == old] = new
    return out


def _combine_tissues(cc: dict[str, np.ndarray], rules: dict[str, tuple[str, ...]]):
    """combine_lesions_NETC/_ET/_RC/_SNFH (GLI) or combine_lesions_ET (MET), then reorder:
    each step relabels the tissue's result so far through one partner's original labels."""
    out = dict(cc)
    for tissue, partners in rules.items():
        img = cc[tissue]
        for partner in partners:
            pairs = _touching(img, cc[partner])
            if len(pairs) > 1:
                img = _relabel(pairs, img)
        out[tissue] = _reorder(img)
    return out


def _reference_scores(pred_cc, gt_cc, spacing, dil, thresh, penalty, false_positives=True):
    """get_LesionWiseScores and the case score of get_LesionWiseResults."""
    voxel = float(np.prod(spacing))
    tp_ids: list[int] = []
    rows = []
    for gtcomp in range(1, int(gt_cc.max()) + 1):
        gt_tmp = gt_cc == gtcomp
        hits = np.unique(pred_cc * _dilate(gt_tmp, dil))
        hits = hits[hits != 0]
        tp_ids.extend(int(h) for h in hits)
        union = np.isin(pred_cc, hits)
        dice = 2.0 * np.sum(union & gt_tmp) / (union.sum() + gt_tmp.sum())
        hd = hd95(union, gt_tmp, spacing) if union.any() else math.inf
        rows.append((len(hits), gt_tmp.sum() * voxel, dice, hd))
    fp = np.unique(pred_cc[np.isin(pred_cc, [*tp_ids, 0], invert=True)])
    kept = [r for r in rows if r[1] > thresh]
    charged = len(fp) if false_positives else 0
    hds = [penalty if math.isinf(r[3]) else r[3] for r in kept]
    n = len(kept) + charged
    dice = sum(r[2] for r in kept) / n if n else 1.0
    hd = (sum(hds) + charged * penalty) / n if n else 0.0
    tp = sum(1 for r in kept if r[0])
    return dice, hd, tp, len(fp), len(kept) - tp


def _reference_region(pred, truth, spacing, dil, thresh, pred_thresh, penalty, fp=True):
    """One region that no tissue regroups (GLI WT/TC, MET WT/TC, PED, MEN-RT)."""
    gt_cc = _combined_by_dilation(truth, dil)
    pred_cc = _drop_small(_combined_by_dilation(pred, dil), pred_thresh)
    return _reference_scores(pred_cc, gt_cc, spacing, dil, thresh, penalty, fp)


_GLI_TISSUES = {"NETC": 1, "SNFH": 2, "ET": 3, "RC": 4}
_GLI_DILATION = {"NETC": 5, "SNFH": 3, "ET": 3, "RC": 5}  # the code's "SFNH" gives SNFH 3
_GLI_THRESH = {"NETC": 20, "SNFH": 20, "ET": 10, "RC": 20}
_GLI_RULES = {"NETC": ("ET", "RC"), "ET": ("NETC", "RC"), "RC": ("ET", "NETC")}
_GLI_RULES["SNFH"] = ("ET", "RC", "NETC")


def _reference_gli(pred, truth, spacing):
    """metrics_GLI.get_LesionWiseResults, for labels 1 NETC, 2 SNFH, 3 ET, 4 RC."""
    out = {}
    for region, classes in (("WT", (1, 2, 3)), ("TC", (1, 3))):
        p, t = np.isin(pred, classes), np.isin(truth, classes)
        out[region] = _reference_region(p, t, spacing, 3, 20, 20, 337.0)
    gt_cc, pred_cc = {}, {}
    for tissue, value in _GLI_TISSUES.items():
        dil = _GLI_DILATION[tissue]
        gt_cc[tissue] = _combined_by_dilation(truth == value, dil)
        pred_cc[tissue] = _drop_small(
            _combined_by_dilation(pred == value, dil), _GLI_THRESH[tissue]
        )
    gt_cc, pred_cc = _combine_tissues(gt_cc, _GLI_RULES), _combine_tissues(pred_cc, _GLI_RULES)
    for tissue in _GLI_TISSUES:
        out[tissue] = _reference_scores(
            pred_cc[tissue],
            gt_cc[tissue],
            spacing,
            _GLI_DILATION[tissue],
            _GLI_THRESH[tissue],
            337.0,
        )
    return out


def _reference_met(pred, truth, spacing):
    """metrics_MET.get_LesionWiseResults (WT, TC, ET), labels 1 NETC, 2 SNFH, 3 ET."""
    out = {}
    for region, classes in (("WT", (1, 2, 3)), ("TC", (1, 3))):
        p, t = np.isin(pred, classes), np.isin(truth, classes)
        out[region] = _reference_region(p, t, spacing, 1, 2, 2, 374.0)
    gt_cc = {t: _combined_by_dilation(truth == v, 1) for t, v in (("NETC", 1), ("ET", 3))}
    pred_cc = {
        t: _drop_small(_combined_by_dilation(pred == v, 1), 2) for t, v in (("NETC", 1), ("ET", 3))
    }
    rules = {"ET": ("NETC",)}
    gt_cc, pred_cc = _combine_tissues(gt_cc, rules), _combine_tissues(pred_cc, rules)
    out["ET"] = _reference_scores(pred_cc["ET"], gt_cc["ET"], spacing, 1, 2, 374.0)
    return out


def _ball(shape, centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


def _specks(rng: np.random.Generator, labels: np.ndarray, n: int, n_classes: int) -> None:
    """``n`` boxes of 1 to 4 voxels a side, each of one random class, anywhere."""
    for _ in range(n):
        z, y, x = rng.integers(0, np.array(labels.shape) - 4)
        d, h, w = rng.integers(1, 5, size=3)
        labels[z : z + d, y : y + h, x : x + w] = rng.integers(1, n_classes + 1)


def _label_map(rng: np.random.Generator, shape, n_classes: int) -> np.ndarray:
    """A few tumours (ellipsoids split into touching class patches) and small specks."""
    out = np.zeros(shape, np.uint8)
    kind = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    patches = np.digitize(kind, np.quantile(kind, np.linspace(0, 1, n_classes + 1)[1:-1])) + 1
    for _ in range(5):
        tumour = _ball(shape, rng.uniform(3, np.array(shape) - 3), rng.uniform(1.5, 5, size=3))
        out[tumour] = patches[tumour]
    _specks(rng, out, 12, n_classes)
    return out


def _perturbed(rng: np.random.Generator, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A prediction: the truth with patches relabelled, a part lost and specks added."""
    out = labels.copy()
    kind = ndimage.gaussian_filter(rng.standard_normal(labels.shape), 1.0)
    change = (kind > np.quantile(kind, 0.8)) & (labels > 0)
    out[change] = rng.integers(1, n_classes + 1, size=int(change.sum()))
    lost = ndimage.gaussian_filter(rng.standard_normal(labels.shape), 2.0)
    out[lost > np.quantile(lost, 0.9)] = 0
    _specks(rng, out, 14, n_classes)
    return out


def _assert_same(got: LesionScores, want, what: str) -> None:
    assert (got.tp, got.fp, got.fn) == want[2:], what
    assert got.dice == pytest.approx(want[0], abs=1e-12), what
    assert got.hd95 == pytest.approx(want[1], abs=1e-9), what


_SPACINGS = [(1.0, 1.0, 1.0), (1.0, 1.2, 2.0), (0.8, 0.8, 1.5)]
_SHAPE = (40, 38, 36)


def _case(seed: int, n_classes: int):
    rng = np.random.default_rng(seed)
    truth = _label_map(rng, _SHAPE, n_classes)
    return _perturbed(rng, truth, n_classes), truth, _SPACINGS[seed % len(_SPACINGS)]


def _glioma_tissues(pred, truth, spacing, task="glioma", tissues=_GLI_TISSUES):
    return tissue_lesion_scores(
        {name: pred == value for name, value in tissues.items()},
        {name: truth == value for name, value in tissues.items()},
        spacing,
        task,
    )


@pytest.mark.parametrize("seed", range(5))
def test_glioma_matches_the_2024_reference(seed):
    pred, truth, spacing = _case(seed, 4)
    want = _reference_gli(pred, truth, spacing)
    for region, classes in (("WT", (1, 2, 3)), ("TC", (1, 3))):
        settings = region_settings("glioma", "brats2024", region)
        got = lesion_scores(np.isin(pred, classes), np.isin(truth, classes), spacing, settings)
        _assert_same(got, want[region], region)
    tissues = _glioma_tissues(pred, truth, spacing)
    assert set(tissues) == set(CROSS_TISSUE["glioma"])
    for region in _GLI_TISSUES:
        _assert_same(tissues[region], want[region], region)


@pytest.mark.parametrize("seed", range(3))
def test_metastasis_matches_the_2024_reference(seed):
    pred, truth, spacing = _case(100 + seed, 3)
    want = _reference_met(pred, truth, spacing)
    for region, classes in (("WT", (1, 2, 3)), ("TC", (1, 3))):
        settings = region_settings("metastasis", "brats2024", region)
        got = lesion_scores(np.isin(pred, classes), np.isin(truth, classes), spacing, settings)
        _assert_same(got, want[region], region)
    tissues = _glioma_tissues(pred, truth, spacing, "metastasis", {"NETC": 1, "ET": 3})
    assert set(tissues) == {"ET"}
    _assert_same(tissues["ET"], want["ET"], "ET")


@pytest.mark.parametrize("seed", range(3))
def test_paediatric_matches_the_2024_reference(seed):
    pred, truth, spacing = _case(200 + seed, 4)
    # metrics_PED: labels 1 ET, 2 NETC, 3 CC, 4 ED; dilation 5, lesions over 10 mm^3,
    # predicted lesions over 10 voxels, penalty 374, no regrouping across tissues.
    for region, classes in (("WT", (1, 2, 3, 4)), ("TC", (1, 2, 3)), ("ET", (1,)), ("ED", (4,))):
        p, t = np.isin(pred, classes), np.isin(truth, classes)
        want = _reference_region(p, t, spacing, 5, 10, 10, 374.0)
        got = lesion_scores(p, t, spacing, region_settings("paediatric", "brats2024", region))
        _assert_same(got, want, region)


@pytest.mark.parametrize("seed", range(4))
def test_meningioma_rt_matches_the_2024_reference(seed):
    pred, truth = (m > 0 for m in _case(300 + seed, 1)[:2])
    spacing = _SPACINGS[seed % len(_SPACINGS)]
    # metrics_MEN_RT: dilation 1, lesions over 50 mm^3, predicted lesions of more than
    # 50 / voxel volume voxels, the shape's diagonal for a missed lesion, no FP term.
    diagonal = math.sqrt(sum(n**2 for n in _SHAPE))
    voxel = float(np.prod(spacing))
    want = _reference_region(pred, truth, spacing, 1, 50, 50 / voxel, diagonal, fp=False)
    _assert_same(lesion_scores(pred, truth, spacing, MEN_RT, diagonal_mm=diagonal), want, "GTV")


def test_the_random_cases_exercise_every_2024_rule():
    """What the comparisons above would miss if the random cases were too tame: each rule
    changes some figure of some case."""
    fp = fn = regrouped = merged = dropped = 0
    for seed in range(5):
        pred, truth, spacing = _case(seed, 4)
        tissues = _glioma_tissues(pred, truth, spacing)
        for region, value in _GLI_TISSUES.items():
            settings = region_settings("glioma", "brats2024", region)
            p, t = pred == value, truth == value
            alone = lesion_scores(p, t, spacing, settings)
            fp += tissues[region].fp > 0
            fn += tissues[region].fn > 0
            regrouped += alone != tissues[region]
            unmerged = dataclasses.replace(settings, merge_predictions=False)
            merged += lesion_scores(p, t, spacing, unmerged) != alone
            kept = dataclasses.replace(settings, min_prediction_voxels=0)
            dropped += lesion_scores(p, t, spacing, kept) != alone
    assert min(fp, fn, regrouped, merged, dropped) >= 2, (fp, fn, regrouped, merged, dropped)
    counted = dropped = missed = 0
    for seed in range(4):
        pred, truth = (m > 0 for m in _case(300 + seed, 1)[:2])
        spacing = _SPACINGS[seed % len(_SPACINGS)]
        s = lesion_scores(pred, truth, spacing, MEN_RT, diagonal_mm=500.0)
        charged = dataclasses.replace(MEN_RT, false_positives=True)
        counted += lesion_scores(pred, truth, spacing, charged, diagonal_mm=500.0) != s
        kept = dataclasses.replace(MEN_RT, min_prediction_mm3=0.0)
        dropped += lesion_scores(pred, truth, spacing, kept, diagonal_mm=500.0) != s
        missed += s.fn > 0
    assert min(counted, dropped, missed) >= 1, (counted, dropped, missed)
