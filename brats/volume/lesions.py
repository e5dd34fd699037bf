"""Lesion-wise Dice and HD95 as the BraTS 2023 and 2024 challenges score them, plus normalized
surface Dice, sensitivity and specificity: per region, on two boolean masks.

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

**NSD** (normalized surface Dice, Nikolov et al.) at tolerance ``tau``: the share of both
masks' surface voxels that lie within ``tau`` mm of the other mask's surface. Both empty: 1;
one empty: 0. **Sensitivity** is ``|P & T| / |T|`` (both empty: 1; empty truth, something
predicted: 0); **specificity** is ``TN / (TN + FP)`` over the whole volume (1 when every voxel
is in the truth).

Everything runs on the bounding box of the two masks grown by ``dilation + 1`` voxels, which
changes no result: a lesion costs what its box costs, not what the volume costs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.options import option
from brats.volume.geometry import bounding_box
from brats.volume.labels import LESION_TASKS
from brats.volume.surfaces import as_masks, as_spacing, hd95, surface_figures

_DILATION_ELEMENT: Final = ndimage.generate_binary_structure(3, 2)  # 18-connected
_COMPONENTS: Final = ndimage.generate_binary_structure(3, 3)  # 26-connected
_CELL: Final = 8
"""Smallest side of the cells :func:`_lesions` pools the truth into to find its lesions."""

LESION_METRICS: Final = ("brats2023", "brats2024")
"""Whose lesion-wise rules :func:`region_settings` gives: the BraTS 2023 or 2024 code's."""

Box = tuple[slice, slice, slice]
Mask = npt.NDArray[np.bool_]


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
    component_of, n_components = _predicted_lesions(p, settings, _voxel_mm3(spacing))
    lesions = _lesions(t, settings.dilation)
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
    truth_parts = {n: _parts(m[box], settings[n], None) for n, m in sides["truth"].items()}
    pred_parts = {n: _parts(m[box], settings[n], voxel_mm3) for n, m in sides["pred"].items()}
    frame = anything[box].shape
    out: dict[str, LesionScores] = {}
    for region, partners in rules.items():
        truth_groups = _regroup(truth_parts, region, partners)
        pred_groups = _regroup(pred_parts, region, partners)
        component_of = np.zeros(frame, dtype=np.int32)
        for k, group in enumerate(pred_groups, start=1):
            for part in group:
                component_of[part.where][part.voxels] = k
        lesions = (_merged(group) for group in truth_groups)
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
        around = _union(where, *(component_boxes[c - 1] for c in matches))
        truth_mask = np.zeros([s.stop - s.start for s in around], dtype=bool)
        truth_mask[_within(where, around)] = lesion
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


def _too_small(voxels: int, settings: LesionSettings, voxel_mm3: float) -> bool:
    """Whether step 7 removes a predicted lesion of ``voxels`` voxels."""
    if voxels <= settings.min_prediction_voxels:
        return True
    return settings.min_prediction_mm3 > 0 and voxels <= settings.min_prediction_mm3 / voxel_mm3


def _prediction_parts(p: Mask, settings: LesionSettings) -> Iterator[tuple[Box, Mask, Mask]]:
    """Each predicted lesion before step 7 as ``(box, voxels, dilated)``, as :func:`_lesions`
    gives truth lesions: merged by the dilation (step 6), or the plain 26-components."""
    if settings.merge_predictions:
        yield from _lesions(p, settings.dilation)
        return
    labels, _ = ndimage.label(p, structure=_COMPONENTS)
    for k, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is not None:
            component = labels[found] == k
            yield _box([(s.start, s.stop) for s in found]), component, component


def _predicted_lesions(
    p: Mask, settings: LesionSettings, voxel_mm3: float
) -> tuple[npt.NDArray[np.int32], int]:
    """The predicted lesions of ``p`` (steps 2, 6 and 7) as labels ``1..n``, and ``n``."""
    dropping = settings.min_prediction_voxels > 0 or settings.min_prediction_mm3 > 0
    if not settings.merge_predictions and not dropping:
        labels, n = ndimage.label(p, structure=_COMPONENTS)
        return labels, int(n)
    labels = np.zeros(p.shape, dtype=np.int32)
    n = 0
    for where, voxels, _ in _prediction_parts(p, settings):
        if not _too_small(int(np.count_nonzero(voxels)), settings, voxel_mm3):
            n += 1
            labels[where][voxels] = n
    return labels, n


@dataclass(frozen=True)
class _Part:
    """One lesion of one tissue before step 10: its box, its voxels and dilated mask within
    the box, and the position of the dilated mask's first voxel in raster order."""

    where: Box
    voxels: Mask
    reach: Mask
    first: tuple[int, ...]


def _parts(mask: Mask, settings: LesionSettings, voxel_mm3: float | None) -> list[_Part]:
    """The lesions of one tissue, numbered (listed) in raster order of their dilated masks:
    truth lesions (step 1), or with ``voxel_mm3`` predicted ones (steps 6 and 7)."""
    found = (
        _lesions(mask, settings.dilation)
        if voxel_mm3 is None
        else _prediction_parts(mask, settings)
    )
    parts: list[_Part] = []
    for where, voxels, reach in found:
        if voxel_mm3 is not None and _too_small(int(np.count_nonzero(voxels)), settings, voxel_mm3):
            continue
        first = np.unravel_index(int(np.argmax(reach)), reach.shape)
        position = tuple(int(i) + s.start for i, s in zip(first, where, strict=True))
        parts.append(_Part(where, voxels, reach, position))
    parts.sort(key=lambda part: part.first)
    return parts


def _regroup(
    parts: Mapping[str, list[_Part]], region: str, partners: Sequence[str]
) -> list[list[_Part]]:
    """Step 10: the lesions of ``region`` regrouped through each of ``partners`` in turn."""
    own = parts[region]
    # A voxel of margin around each part: its box holds it (or ends where the frame does).
    near = [ndimage.binary_dilation(part.voxels, structure=_DILATION_ELEMENT) for part in own]
    groups: list[list[int]] = [[i] for i in range(len(own))]
    for partner in partners:
        others = parts[partner]
        if not own or not others:
            continue
        touched = [
            _touched(part.where, grown, others) for part, grown in zip(own, near, strict=True)
        ]
        joined: dict[int, list[int]] = {}
        regrouped: list[list[int]] = []
        for group in groups:
            numbers = set().union(*(touched[i] for i in group))
            if not numbers:
                regrouped.append(group)
                continue
            first = min(numbers)
            if first in joined:
                joined[first].extend(group)
            else:
                joined[first] = list(group)
                regrouped.append(joined[first])
        groups = regrouped
    return [[own[i] for i in group] for group in groups]


def _touched(where: Box, near: Mask, others: list[_Part]) -> set[int]:
    """The numbers (1-based positions in ``others``) of the partner lesions that ``near``, a
    part's voxels grown by one 18-connected step within ``where``, reaches."""
    found: set[int] = set()
    for k, other in enumerate(others, start=1):
        common = _intersection(where, other.where)
        if common is not None and np.any(
            near[_within(common, where)] & other.voxels[_within(common, other.where)]
        ):
            found.add(k)
    return found


def _intersection(a: Box, b: Box) -> Box | None:
    """The box two boxes share, or ``None``."""
    bounds = [(max(s.start, t.start), min(s.stop, t.stop)) for s, t in zip(a, b, strict=True)]
    return _box(bounds) if all(lo < hi for lo, hi in bounds) else None


def _merged(group: list[_Part]) -> tuple[Box, Mask, Mask]:
    """One lesion made of ``group``'s parts, as ``(box, lesion, dilated)``."""
    if len(group) == 1:
        return group[0].where, group[0].voxels, group[0].reach
    around = _union(*(part.where for part in group))
    lesion = np.zeros([s.stop - s.start for s in around], dtype=bool)
    reach = np.zeros_like(lesion)
    for part in group:
        inner = _within(part.where, around)
        lesion[inner] |= part.voxels
        reach[inner] |= part.reach
    return around, lesion, reach


def _lesions(
    truth: npt.NDArray[np.bool_], iterations: int
) -> Iterator[tuple[Box, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]]:
    """Each truth lesion as ``(box, lesion, dilated)``: a box of ``truth``, and within it the
    lesion's truth voxels and its dilated mask (step 1 of the module docstring).

    Exact, at the cost of the lesions rather than of the box around all of them: ``truth`` is
    pooled into cells more than ``2 * iterations`` voxels wide, so that truth voxels in two
    cells that do not touch are too far apart for their dilations to meet. Each connected
    group of occupied cells is then dilated and split into components on its own, within its
    box grown by ``iterations + 1``.
    """
    cell = max(_CELL, 2 * iterations + 1)
    shape = truth.shape
    padded = np.pad(truth, [(0, -n % cell) for n in shape])
    d, h, w = (n // cell for n in padded.shape)
    occupied = padded.reshape(d, cell, h, cell, w, cell).any(axis=(1, 3, 5))
    groups, _ = ndimage.label(occupied, structure=_COMPONENTS)
    for group, found in enumerate(ndimage.find_objects(groups), start=1):
        if found is None:
            continue
        span = _box(
            [(s.start * cell, min(s.stop * cell, n)) for s, n in zip(found, shape, strict=True)]
        )
        where = _box(
            [(max(s.start - iterations - 1, 0), min(s.stop + iterations + 1, n))
             for s, n in zip(span, shape, strict=True)]
        )  # fmt: skip
        mine = (groups[found] == group).repeat(cell, 0).repeat(cell, 1).repeat(cell, 2)
        own = np.zeros([s.stop - s.start for s in where], dtype=bool)
        own[_within(span, where)] = truth[span] & mine[_box([(0, s.stop - s.start) for s in span])]
        dilated = own
        if iterations:
            dilated = ndimage.binary_dilation(
                own, structure=_DILATION_ELEMENT, iterations=iterations
            )
        components, n = ndimage.label(dilated, structure=_COMPONENTS)
        for k in range(1, n + 1):
            component = components == k
            yield where, own & component, component


def _box(bounds: list[tuple[int, int]]) -> Box:
    return slice(*bounds[0]), slice(*bounds[1]), slice(*bounds[2])


def _within(inner: Box, outer: Box) -> Box:
    """``inner`` in the coordinates of the box ``outer``, which holds it."""
    return _box([(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)])


def _union(*boxes: tuple[slice, ...] | None) -> tuple[slice, slice, slice]:
    """The smallest box holding every one of ``boxes`` (slices as ``find_objects`` gives)."""
    present = [b for b in boxes if b is not None]
    lo = [min(b[axis].start for b in present) for axis in range(3)]
    hi = [max(b[axis].stop for b in present) for axis in range(3)]
    return slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2])


def normalized_surface_dice(
    pred: npt.NDArray[np.bool_],
    truth: npt.NDArray[np.bool_],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> float:
    """Share of both masks' surface voxels within ``tolerance_mm`` of the other's surface.

    Surfaces and distances as :func:`brats.volume.surfaces.surface_distances` defines them
    (:func:`brats.volume.surfaces.surface_figures` computes it with HD95 in one pass).
    Both masks empty: 1.0; one empty: 0.0.
    """
    p, t = as_masks(pred, truth)
    return surface_figures(p, t, as_spacing(spacing, p.ndim), 0.0, tolerance_mm)[1]


def specificity(pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_], size: int) -> float:
    """``TN / (TN + FP)`` over a volume of ``size`` voxels of which ``pred`` and ``truth``
    are a crop holding every voxel either marks (1.0 when every voxel is in the truth)."""
    n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    return specificity_of(n_p, n_t, int(np.count_nonzero(pred & truth)), size)


def specificity_of(n_pred: int, n_truth: int, n_both: int, size: int) -> float:
    """Specificity from ``|P|``, ``|T|``, ``|P & T|`` and the volume's voxel count."""
    negatives = size - n_truth  # true negatives + false positives
    return (size - n_pred - n_truth + n_both) / negatives if negatives else 1.0
