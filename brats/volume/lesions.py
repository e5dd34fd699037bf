"""Lesion-wise Dice and HD95 as the BraTS 2023 and 2024 challenges score them: per region, on
two boolean masks (the lesions themselves are found by :mod:`brats.volume.lesion_parts`).

Lesion-wise scoring (BraTS 2023 lesion-wise metrics, Saluja et al.; reference code
``rachitsaluja/BraTS-2023-Metrics``), with the parameters of :class:`LesionSettings` (which,
with each challenge's settings and :func:`region_settings`, lives in
:mod:`brats.volume.lesion_settings` and is re-exported here):

1. **Lesions.** The truth mask is dilated by ``dilation`` iterations of the 18-connected 3-D
   structuring element, and the dilation is split into 26-connected components. A lesion is
   the truth voxels inside one such component, so two truth components whose dilations touch
   are one lesion. The component itself is the lesion's *dilated mask*.
2. **Matches.** Predicted components are 26-connected. A predicted component matches every
   lesion whose dilated mask it intersects (it may match several).
3. **Scores.** A lesion is scored against the union of its matches: Dice, and HD95 as
   :func:`brats.volume.surfaces.hd95` defines it. A lesion without a match is a false negative
   (FN): Dice 0, HD95 ``penalty_mm``. A predicted component that matches no lesion is a false
   positive (FP), whatever its size: Dice 0, HD95 ``penalty_mm``.
4. **Small lesions.** Lesions of ``min_volume_mm3`` or less (voxel count times voxel volume)
   are left out of the score and the counts. Predicted components that match only such a
   lesion are not false positives either.
5. **Case score.** The sum over the lesions kept, plus the FP penalties, divided by the number
   of lesions kept plus the number of FP components. Nothing to score (no lesion kept, no FP):
   Dice 1, HD95 0.

**BraTS 2024** (reference code ``rachitsaluja/BraTS-2024-Metrics``, the newest stored version of
each file: ``metrics_GLI.py`` at commit ``9e8879a``, ``metrics_MET.py`` at ``b04e5a0``,
``metrics_PED.py`` at ``7fa0b9e``, ``metrics_MEN_RT.py`` at ``bc6308f``) keeps steps 1-5 and
adds the following, which :func:`region_settings` switches on per task and region:

6. **Predicted lesions** (``merge_predictions``). Predictions are grouped the way the truth is
   in step 1, with the same ``dilation``: the predicted voxels inside one 26-connected
   component of the dilated prediction are one predicted lesion. Steps 2-5 then count
   predicted lesions where they counted predicted components.
7. **Small predictions** (``min_prediction_voxels``, ``min_prediction_mm3``). A predicted lesion
   of that many voxels or fewer (the glioma, metastasis and paediatric code counts voxels,
   the MEN-RT code mm^3) is removed before anything is matched: it is neither a false
   positive nor part of a match. It is the *merged* lesion that must be large enough.
8. **Penalty.** Glioma 337 mm (374 in the file's older versions); metastasis and paediatric
   374; MEN-RT the image diagonal (``penalty_mm=None``: the caller passes it as
   ``diagonal_mm``; the reference takes ``sqrt(X^2 + Y^2 + Z^2)`` of the image *shape*, in
   voxels whatever the spacing, and charges it to missed lesions only).
9. **No false-positive term** (``false_positives=False``, MEN-RT). False-positive lesions are
   still counted (``fp``) but cost nothing: the case score is the mean over the lesions kept,
   and with no lesion kept it is Dice 1, HD95 0 whatever was predicted.
10. **Lesions across tissues** (glioma NETC, SNFH, ET and RC; metastasis ET), in
    :func:`tissue_lesion_scores`, which takes every class mask of the case. After steps 1, 6
    and 7 the lesions of a tissue are regrouped, on each side, through the lesions of its
    partner tissues (:data:`CROSS_TISSUE`, in the reference's order), one partner after the
    other: every lesion that touches a partner lesion (18-connected) joins the other lesions
    whose lowest-numbered touched partner lesion is the same one. Partner lesions are
    numbered in the raster order (C order of the arrays) of their dilated masks' first voxel,
    as connected-component labelling numbers them. The rule is the reference's, not a
    transitive closure: two lesions touching one partner lesion are one, but a lesion
    touching partner lesions 1 and 2 joins only the group of 1.

Two details of the 2024 glioma code that :func:`region_settings` follows as written: NETC and
RC use dilation 5 and the other regions 3 (the code lists ``"SFNH"``, a name no region has,
with the dilation-5 tissues, so SNFH gets 3); ET keeps lesions over 10 mm^3 and drops
predicted lesions of 10 voxels or fewer, the other regions 20.

The reference code measures HD95 with DeepMind's ``surface-distance`` (each surface element
weighted by its area, the larger of the two directed 95th percentiles); here it is MedPy's
voxel-surface HD95 that the whole-volume figure uses too, so the two HD95 columns of a report
mean the same thing. The two agree to within about a voxel on good segmentations.

Everything runs on the bounding box of the two masks grown by ``dilation + 1`` voxels, which
changes no result: a lesion costs what its box costs, not what the volume costs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.volume.geometry import bounding_box
from brats.volume.lesion_parts import (
    Box,
    Mask,
    merged,
    predicted_lesions,
    regroup,
    tissue_parts,
    truth_lesions,
    union,
    within,
)
from brats.volume.lesion_settings import (
    CROSS_TISSUE,
    GLIOMA,
    GLIOMA_2024,
    LESION_METRICS,
    MENINGIOMA,
    MENINGIOMA_RT_2024,
    METASTASIS,
    METASTASIS_2024,
    PAEDIATRIC_2024,
    LesionSettings,
    region_settings,
)
from brats.volume.scheme import LESION_TASKS
from brats.volume.surfaces import hd95

__all__ = [
    "CROSS_TISSUE",
    "GLIOMA",
    "GLIOMA_2024",
    "LESION_METRICS",
    "LESION_TASKS",
    "MENINGIOMA",
    "MENINGIOMA_RT_2024",
    "METASTASIS",
    "METASTASIS_2024",
    "PAEDIATRIC_2024",
    "LesionScores",
    "LesionSettings",
    "lesion_scores",
    "region_settings",
    "tissue_lesion_scores",
]


@dataclass(frozen=True)
class LesionScores:
    """One region's lesion-wise figures: case Dice and HD95, and the lesion counts."""

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int


_NOTHING: Final = LesionScores(dice=1.0, hd95=0.0, tp=0, fp=0, fn=0)


def lesion_scores(
    pred: Mask,
    truth: Mask,
    spacing: Sequence[float],
    settings: LesionSettings = GLIOMA,
    *,
    diagonal_mm: float | None = None,
) -> LesionScores:
    """Lesion-wise Dice, HD95 and TP/FP/FN counts of one region (see the module docstring).

    Args:
        pred, truth: boolean ``(D, H, W)`` masks of the region, same shape.
        spacing: voxel size in mm per axis, in the arrays' axis order (positive, validated
            by the caller).
        settings: dilation, size thresholds, penalty and the 2024 rules.
        diagonal_mm: the penalty when ``settings.penalty_mm`` is ``None`` (required then,
            unused otherwise): the image diagonal of the whole volume, not of a crop.

    Raises:
        ValueError: the settings ask for the diagonal and ``diagonal_mm`` is missing.
    """
    penalty = _penalty(settings, diagonal_mm)
    if not pred.any() and not truth.any():
        return _NOTHING
    box = bounding_box(pred | truth, margin=settings.dilation + 1).slices
    p, t = pred[box], truth[box]
    component_of, n_components = predicted_lesions(p, settings, _voxel_mm3(spacing))
    lesions = truth_lesions(t, settings.dilation)
    return _tally(component_of, n_components, lesions, spacing, settings, penalty)


def tissue_lesion_scores(
    pred: Mapping[str, Mask],
    truth: Mapping[str, Mask],
    spacing: Sequence[float],
    task: str,
    *,
    diagonal_mm: float | None = None,
) -> dict[str, LesionScores]:
    """BraTS 2024 lesion-wise figures of the regions whose lesions are regrouped across
    tissues (step 10 of the module docstring), with :func:`region_settings` ``(task,
    "brats2024", region)``.

    Args:
        pred, truth: the boolean ``(D, H, W)`` mask of every tissue :data:`CROSS_TISSUE`
            names for ``task``, by name (glioma: ``NETC``, ``SNFH``, ``ET``, ``RC``;
            metastasis: ``NETC``, ``ET``); other names are ignored. One shape throughout:
            whole volumes, or crops that keep at least the largest dilation (5) around every
            labelled voxel, since partner lesions are numbered by where their dilated masks
            begin, which a tighter crop can move.
        spacing: voxel size in mm per axis, in the arrays' axis order.
        task: ``"glioma"`` or ``"metastasis"``.
        diagonal_mm: as for :func:`lesion_scores` (no 2024 setting used here needs it).

    Returns:
        Region name -> scores, for the regions of ``CROSS_TISSUE[task]`` (glioma: NETC, ET, RC,
        SNFH; metastasis: ET). The other regions of the task (WT, TC, ...) are not regrouped:
        :func:`lesion_scores` scores them.

    Raises:
        ValueError: an unknown task, a missing tissue, or masks of different shapes.
    """
    if task not in CROSS_TISSUE:
        raise ValueError(
            f"no regions are regrouped across tissues for task {task!r}; "
            f"choose one of {', '.join(CROSS_TISSUE)}"
        )
    rules = CROSS_TISSUE[task]
    names = tuple(dict.fromkeys([*rules, *(name for group in rules.values() for name in group)]))
    sides: dict[str, dict[str, Mask]] = {}
    for side, given in (("pred", pred), ("truth", truth)):
        missing = [name for name in names if name not in given]
        if missing:
            raise ValueError(f"{side} lacks the {', '.join(missing)} mask(s) {task} needs")
        sides[side] = {name: np.asarray(given[name], dtype=bool) for name in names}
    shapes = {m.shape for masks in sides.values() for m in masks.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"tissue masks must be 3-D and of one shape, got {sorted(shapes)}")
    settings = {name: region_settings(task, "brats2024", name) for name in names}
    penalties = {region: _penalty(settings[region], diagonal_mm) for region in rules}
    anything = np.zeros(next(iter(shapes)), dtype=bool)
    for masks in sides.values():
        for m in masks.values():
            anything |= m
    if not anything.any():
        return {region: _NOTHING for region in rules}
    margin = max(s.dilation for s in settings.values()) + 1
    box = bounding_box(anything, margin=margin).slices
    voxel_mm3 = _voxel_mm3(spacing)
    truth_parts = {n: tissue_parts(m[box], settings[n], None) for n, m in sides["truth"].items()}
    pred_parts = {n: tissue_parts(m[box], settings[n], voxel_mm3) for n, m in sides["pred"].items()}
    frame = anything[box].shape
    out: dict[str, LesionScores] = {}
    for region, partners in rules.items():
        truth_groups = regroup(truth_parts, region, partners)
        pred_groups = regroup(pred_parts, region, partners)
        component_of = np.zeros(frame, dtype=np.int32)
        for k, group in enumerate(pred_groups, start=1):
            for part in group:
                component_of[part.where][part.voxels] = k
        lesions = (merged(group) for group in truth_groups)
        out[region] = _tally(
            component_of, len(pred_groups), lesions, spacing, settings[region], penalties[region]
        )
    return out


def _penalty(settings: LesionSettings, diagonal_mm: float | None) -> float:
    if settings.penalty_mm is not None:
        return float(settings.penalty_mm)
    if diagonal_mm is None:
        raise ValueError(
            "these lesion-wise settings charge the image diagonal (penalty_mm=None): "
            "pass diagonal_mm"
        )
    value = float(diagonal_mm)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"diagonal_mm must be a finite number >= 0, got {diagonal_mm!r}")
    return value


def _voxel_mm3(spacing: Sequence[float]) -> float:
    return float(np.prod([float(s) for s in spacing]))


def _tally(
    component_of: npt.NDArray[np.integer],
    n_components: int,
    lesions: Iterable[tuple[Box, Mask, Mask]],
    spacing: Sequence[float],
    settings: LesionSettings,
    penalty: float,
) -> LesionScores:
    """Steps 2-5 (and 9) of the module docstring: score ``lesions`` (each a box of
    ``component_of`` and, within it, the lesion and its dilated mask) against the predicted
    lesions ``1..n_components`` that ``component_of`` labels."""
    component_boxes = ndimage.find_objects(component_of)
    sizes: dict[int, int] = {}

    def size(c: int) -> int:
        if c not in sizes:
            sizes[c] = int(np.count_nonzero(component_of[component_boxes[c - 1]] == c))
        return sizes[c]

    matched = np.zeros(n_components + 1, dtype=bool)
    voxel_mm3 = _voxel_mm3(spacing)
    dice_sum = hd_sum = 0.0
    tp = fn = 0
    for where, lesion, dilated in lesions:
        here = component_of[where]
        matches = np.unique(here[dilated])
        matches = matches[matches > 0]
        matched[matches] = True  # a match of a dropped lesion is no false positive either
        voxels = int(np.count_nonzero(lesion))
        if voxels * voxel_mm3 <= settings.min_volume_mm3:
            continue
        if matches.size == 0:
            fn += 1
            hd_sum += penalty
            continue
        tp += 1
        # Every predicted voxel on the lesion belongs to a match (it lies in the dilated mask).
        overlap = int(np.count_nonzero(lesion & (here > 0)))
        predicted = sum(size(int(c)) for c in matches)
        dice_sum += 2.0 * overlap / (voxels + predicted)
        # Only the box of the lesion's dilated mask and its matches holds either surface.
        around = union(where, *(component_boxes[c - 1] for c in matches))
        truth_mask = np.zeros([s.stop - s.start for s in around], dtype=bool)
        truth_mask[within(where, around)] = lesion
        hd_sum += hd95(np.isin(component_of[around], matches), truth_mask, spacing)
    n_fp = int(n_components - matched[1:].sum())
    charged = n_fp if settings.false_positives else 0
    scored = tp + fn + charged
    if scored == 0:
        return LesionScores(dice=1.0, hd95=0.0, tp=0, fp=n_fp, fn=0)
    return LesionScores(
        dice=dice_sum / scored,
        hd95=(hd_sum + charged * penalty) / scored,
        tp=tp,
        fp=n_fp,
        fn=fn,
    )
