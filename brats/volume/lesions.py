"""Lesion-wise Dice and HD95 as the BraTS 2023 challenges score them, plus normalized surface
Dice, sensitivity and specificity: per region, on two boolean masks.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.options import option
from brats.volume.geometry import bounding_box
from brats.volume.surfaces import as_masks, as_spacing, hd95, surface_figures

_DILATION_ELEMENT: Final = ndimage.generate_binary_structure(3, 2)  # 18-connected
_COMPONENTS: Final = ndimage.generate_binary_structure(3, 3)  # 26-connected
_CELL: Final = 8
"""Smallest side of the cells :func:`_lesions` pools the truth into to find its lesions."""


@dataclass(frozen=True)
class LesionSettings:
    """Parameters of lesion-wise scoring (see the module docstring).

    Attributes:
        dilation: iterations of the 18-connected dilation that merges nearby truth lesions
            and decides what a prediction must touch to match (BraTS 2023 glioma: 3).
        min_volume_mm3: truth lesions of this volume or less are not scored (glioma: 50).
        penalty_mm: HD95 of a missed lesion or a false-positive component (374, about the
            diagonal of a 240 x 240 x 155 volume at 1 mm).
        nsd_tolerance_mm: the tolerance of the normalized surface Dice.
    """

    dilation: int = option(
        3, help="lesion-wise scoring: iterations of the 18-connected dilation of the truth"
    )
    min_volume_mm3: float = option(
        50.0,
        flag="--min-lesion-mm3",
        help="lesion-wise scoring: truth lesions of this volume or less are not scored",
    )
    penalty_mm: float = option(
        374.0, help="lesion-wise HD95 of a missed lesion or a false-positive component"
    )
    nsd_tolerance_mm: float = option(1.0, help="tolerance of the normalized surface Dice")

    def __post_init__(self) -> None:
        if isinstance(self.dilation, bool) or not isinstance(self.dilation, int):
            raise ValueError(f"dilation must be an integer, got {self.dilation!r}")
        if self.dilation < 0:
            raise ValueError(f"dilation must be >= 0, got {self.dilation}")
        for name in ("min_volume_mm3", "penalty_mm", "nsd_tolerance_mm"):
            value = float(getattr(self, name))
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")

    def to_dict(self) -> dict[str, float | int]:
        return {
            "dilation": self.dilation,
            "min_volume_mm3": self.min_volume_mm3,
            "penalty_mm": self.penalty_mm,
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
        }


GLIOMA: Final = LesionSettings()
"""BraTS 2023 adult glioma (and SSA, paediatric): dilation 3, lesions over 50 mm^3."""
METASTASIS: Final = LesionSettings(dilation=1, min_volume_mm3=2.0)
"""BraTS 2023 metastasis: dilation 1, lesions over 2 mm^3."""


@dataclass(frozen=True)
class LesionScores:
    """One region's lesion-wise figures: case Dice and HD95, and the lesion counts."""

    dice: float
    hd95: float
    tp: int
    fp: int
    fn: int


def lesion_scores(
    pred: npt.NDArray[np.bool_],
    truth: npt.NDArray[np.bool_],
    spacing: Sequence[float],
    settings: LesionSettings = GLIOMA,
) -> LesionScores:
    """Lesion-wise Dice, HD95 and TP/FP/FN counts of one region (see the module docstring).

    Args:
        pred, truth: boolean ``(D, H, W)`` masks of the region, same shape.
        spacing: voxel size in mm per axis, in the arrays' axis order (positive, validated
            by the caller).
        settings: dilation, size threshold and penalty.
    """
    if not pred.any() and not truth.any():
        return LesionScores(dice=1.0, hd95=0.0, tp=0, fp=0, fn=0)
    box = bounding_box(pred | truth, margin=settings.dilation + 1).slices
    p, t = pred[box], truth[box]
    component_of, n_components = ndimage.label(p, structure=_COMPONENTS)
    component_boxes = ndimage.find_objects(component_of)
    sizes: dict[int, int] = {}

    def size(c: int) -> int:
        if c not in sizes:
            sizes[c] = int(np.count_nonzero(component_of[component_boxes[c - 1]] == c))
        return sizes[c]

    matched = np.zeros(n_components + 1, dtype=bool)
    voxel_mm3 = float(np.prod([float(s) for s in spacing]))
    dice_sum = hd_sum = 0.0
    tp = fn = 0
    for where, lesion, dilated in _lesions(t, settings.dilation):
        matches = np.unique(component_of[where][dilated])
        matches = matches[matches > 0]
        matched[matches] = True  # a match of a dropped lesion is no false positive either
        voxels = int(np.count_nonzero(lesion))
        if voxels * voxel_mm3 <= settings.min_volume_mm3:
            continue
        if matches.size == 0:
            fn += 1
            hd_sum += settings.penalty_mm
            continue
        tp += 1
        overlap = int(np.count_nonzero(lesion & p[where]))
        predicted = sum(size(int(c)) for c in matches)
        dice_sum += 2.0 * overlap / (voxels + predicted)
        # Only the box of the lesion's dilated mask and its matches holds either surface.
        around = _union(where, *(component_boxes[c - 1] for c in matches))
        truth_mask = np.zeros([s.stop - s.start for s in around], dtype=bool)
        truth_mask[_within(where, around)] = lesion
        hd_sum += hd95(np.isin(component_of[around], matches), truth_mask, spacing)
    n_fp = int(n_components - matched[1:].sum())
    scored = tp + fn + n_fp
    if scored == 0:
        return LesionScores(dice=1.0, hd95=0.0, tp=0, fp=0, fn=0)
    return LesionScores(
        dice=dice_sum / scored,
        hd95=(hd_sum + n_fp * settings.penalty_mm) / scored,
        tp=tp,
        fp=n_fp,
        fn=fn,
    )


Box = tuple[slice, slice, slice]


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
