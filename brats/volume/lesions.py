"""Lesion-wise Dice and HD95 as the BraTS 2023 and 2024 challenges score them: per region, on
two boolean masks (the lesions themselves are found by :mod:`brats.volume.lesion_parts`).

Lesion-wise scoring (BraTS 2023 lesion-wise metrics, Saluja et al.; reference code
``rachitsaluja/BraTS-2023-Metrics``), with the parameters of :class:`LesionSettings`:

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

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.options import option
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
from brats.volume.scheme import LESION_TASKS
from brats.volume.surfaces import hd95

LESION_METRICS: Final = ("brats2023", "brats2024")
"""Whose lesion-wise rules :func:`region_settings` gives: the BraTS 2023 or 2024 code's."""


@dataclass(frozen=True)
class LesionSettings:
    """Parameters of lesion-wise scoring (see the module docstring).

    The first four are command-line options of ``brats evaluate``; the rest are BraTS 2024
    rules that :func:`region_settings` sets, whose defaults are the 2023 behaviour.

    Attributes:
        dilation: iterations of the 18-connected dilation that merges nearby truth lesions
            and decides what a prediction must touch to match (BraTS 2023 glioma: 3).
        min_volume_mm3: truth lesions of this volume or less are not scored (glioma: 50).
        penalty_mm: HD95 of a missed lesion or a false-positive component (374, about the
            diagonal of a 240 x 240 x 155 volume at 1 mm); ``None``: the image diagonal,
            which :func:`lesion_scores` then takes as ``diagonal_mm``.
        nsd_tolerance_mm: the tolerance of the normalized surface Dice.
        merge_predictions: group predicted components by the same dilation as the truth
            (step 6).
        min_prediction_voxels: predicted lesions of this many voxels or fewer are removed
            before matching (step 7; 0 removes none).
        min_prediction_mm3: the same, as a volume (0 removes none).
        false_positives: whether false-positive lesions cost Dice 0 and the penalty each
            (step 9).
    """

    dilation: int = option(
        3, help="lesion-wise scoring: iterations of the 18-connected dilation of the truth"
    )
    min_volume_mm3: float = option(
        50.0,
        flag="--min-lesion-mm3",
        help="lesion-wise scoring: truth lesions of this volume or less are not scored",
    )
    penalty_mm: float | None = option(
        374.0, help="lesion-wise HD95 of a missed lesion or a false-positive component"
    )
    nsd_tolerance_mm: float = option(1.0, help="tolerance of the normalized surface Dice")
    merge_predictions: bool = False
    min_prediction_voxels: int = 0
    min_prediction_mm3: float = 0.0
    false_positives: bool = True

    def __post_init__(self) -> None:
        for name in ("dilation", "min_prediction_voxels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name in ("min_volume_mm3", "penalty_mm", "nsd_tolerance_mm", "min_prediction_mm3"):
            raw = getattr(self, name)
            if raw is None and name == "penalty_mm":
                continue
            value = float(raw)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("merge_predictions", "false_positives"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, float | int | bool | None]:
        """The settings, JSON-ready: the four 2023 keys always, a 2024 rule only where it
        differs from its default (so the settings of a 2023 record read as they always did)."""
        out: dict[str, float | int | bool | None] = {
            "dilation": self.dilation,
            "min_volume_mm3": self.min_volume_mm3,
            "penalty_mm": self.penalty_mm,
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
        }
        for f in dataclasses.fields(self):
            if f.name not in out and getattr(self, f.name) != f.default:
                out[f.name] = getattr(self, f.name)
        return out


GLIOMA: Final = LesionSettings()
"""BraTS 2023 adult glioma (and SSA, paediatric): dilation 3, lesions over 50 mm^3."""
METASTASIS: Final = LesionSettings(dilation=1, min_volume_mm3=2.0)
"""BraTS 2023 metastasis: dilation 1, lesions over 2 mm^3."""

GLIOMA_2024: Final = LesionSettings(
    dilation=3,
    min_volume_mm3=20.0,
    penalty_mm=337.0,
    merge_predictions=True,
    min_prediction_voxels=20,
)
"""BraTS 2024 adult glioma, WT, TC and SNFH (NETC, RC and ET differ: :func:`region_settings`)."""
METASTASIS_2024: Final = LesionSettings(
    dilation=1, min_volume_mm3=2.0, merge_predictions=True, min_prediction_voxels=2
)
"""BraTS 2024 metastasis, every region."""
PAEDIATRIC_2024: Final = LesionSettings(
    dilation=5, min_volume_mm3=10.0, merge_predictions=True, min_prediction_voxels=10
)
"""BraTS 2024 paediatric tumours, every region."""
MENINGIOMA_RT_2024: Final = LesionSettings(
    dilation=1,
    min_volume_mm3=50.0,
    penalty_mm=None,
    merge_predictions=True,
    min_prediction_mm3=50.0,
    false_positives=False,
)
"""BraTS 2024 meningioma radiotherapy (GTV): the image diagonal as penalty, no FP term."""

_TASKS_2024: Final[dict[str, LesionSettings]] = {
    "glioma": GLIOMA_2024,
    "metastasis": METASTASIS_2024,
    "paediatric": PAEDIATRIC_2024,
    "meningioma_rt": MENINGIOMA_RT_2024,
}
_REGIONS_2024: Final[dict[str, dict[str, LesionSettings]]] = {
    "glioma": {
        "NETC": dataclasses.replace(GLIOMA_2024, dilation=5),
        "RC": dataclasses.replace(GLIOMA_2024, dilation=5),
        "ET": dataclasses.replace(GLIOMA_2024, min_volume_mm3=10.0, min_prediction_voxels=10),
    },
}

CROSS_TISSUE: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "glioma": {
        "NETC": ("ET", "RC"),
        "ET": ("NETC", "RC"),
        "RC": ("ET", "NETC"),
        "SNFH": ("ET", "RC", "NETC"),
    },
    "metastasis": {"ET": ("NETC",)},
}
"""BraTS 2024 step 10: task -> region scored by :func:`tissue_lesion_scores` -> the partner
tissues its lesions are regrouped through, in order. Each name is one class of the task's
labels (glioma: NETC, SNFH, ET, RC; metastasis: NETC, ET)."""


def region_settings(task: str, metric: str, region: str) -> LesionSettings:
    """The lesion-wise settings of one region of one challenge.

    ``brats2023``: :data:`METASTASIS` for metastasis and :data:`GLIOMA` for the other tasks,
    in every region. ``brats2024``, from the 2024 reference code (module docstring):

    ==============  =======================  ========  =========  ==========  =======  ===
    task            regions                  dilation  truth >    prediction  penalty  FP
    ==============  =======================  ========  =========  ==========  =======  ===
    glioma          WT, TC, SNFH             3         20 mm^3    > 20 vox    337      yes
    glioma          NETC, RC                 5         20 mm^3    > 20 vox    337      yes
    glioma          ET                       3         10 mm^3    > 10 vox    337      yes
    metastasis      all (WT, TC, ET)         1         2 mm^3     > 2 vox     374      yes
    paediatric      all (WT, TC, ET, NETC,   5         10 mm^3    > 10 vox    374      yes
                    CC, ED)
    meningioma_rt   all (GTV)                1         50 mm^3    > 50 mm^3   diag.    no
    ==============  =======================  ========  =========  ==========  =======  ===

    Predictions are merged by the dilation in every 2024 row. A region the reference does not
    score (metastasis RC, say) gets its task's first row. The lesions of glioma NETC, SNFH, ET
    and RC and of metastasis ET are also regrouped across tissues, which only
    :func:`tissue_lesion_scores` does; :func:`lesion_scores` with these settings scores the
    region without that step.

    Raises:
        ValueError: ``task`` is not one of :data:`LESION_TASKS` or ``metric`` not one of
            :data:`LESION_METRICS`.
    """
    if metric not in LESION_METRICS:
        raise ValueError(
            f"unknown lesion-wise metric {metric!r}; choose one of {', '.join(LESION_METRICS)}"
        )
    if task not in LESION_TASKS:
        raise ValueError(
            f"unknown lesion-wise task {task!r}; choose one of {', '.join(LESION_TASKS)}"
        )
    if metric == "brats2023":
        return METASTASIS if task == "metastasis" else GLIOMA
    return _REGIONS_2024.get(task, {}).get(region, _TASKS_2024[task])


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
