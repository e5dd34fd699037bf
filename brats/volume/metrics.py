"""Exact per-case segmentation metrics: Dice, IoU, precision, recall, accuracy and HD95.

Pure numpy/scipy (no TensorFlow, no Ray): a metric is exact and per case, a loss
(:mod:`brats.train.losses`) is differentiable and batched. Inputs are *internal* label volumes
``(D, H, W)`` of a label scheme's classes (see :mod:`brats.volume.labels`; BraTS glioma by
default) and the voxel spacing in millimetres, one value per axis in the same axis order.
Region figures are keyed by the scheme's region names (``dice_WT``, ``lesion_dice_RC``, ...),
class figures by internal class (``dice_class1``, ...).

Empty rules (a metric is never NaN):

* **both masks empty** (nothing predicted, nothing there): Dice, IoU, precision and recall
  are 1, HD95 is 0 mm -- the prediction is exactly right.
* **one mask empty**: Dice, IoU are 0; precision is 0 when the prediction is empty and the
  truth is not (nothing found), recall is 0 when the truth is empty and the prediction is not
  (there is nothing to recall, and everything predicted is wrong) -- i.e. an undefined ratio
  ``0 / 0`` next to an error counts as 0. HD95 is the volume diagonal in mm,
  ``sqrt(sum((shape * spacing) ** 2))`` (373.13 mm for 240 x 240 x 155 at 1 mm): the largest
  distance two voxels of the volume can have, so a miss scores as the worst possible distance
  and stays finite.

Surfaces and HD95:

* The surface of a mask is its voxels with at least one face neighbour (6-connectivity)
  outside the mask; voxels on the volume's border count as surface.
* A directed surface distance set holds, for every surface voxel of one mask, the Euclidean
  distance in mm to the nearest surface voxel of the other mask (exact: from
  a k-d tree over the other surface's voxel centres in mm, which is what a Euclidean
  distance transform gives, at the cost of the surfaces rather than of the volume).
* **HD95 is the 95th percentile (numpy's linear interpolation) of the union of both directed
  sets** -- the definition of MedPy's ``hd95`` that the BraTS evaluations used. MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two directed
  95th percentiles; the two agree when the prediction is good and differ by a few voxels on
  lopsided errors.

Besides those, per region: **NSD** (normalized surface Dice, Nikolov et al.) at tolerance
``tau``, the share of both masks' surface voxels that lie within ``tau`` mm of the other
mask's surface (both empty: 1; one empty: 0); **sensitivity** ``|P & T| / |T|`` (both empty:
1; empty truth, something predicted: 0); **specificity** ``TN / (TN + FP)`` over the whole
volume (1 when every voxel is in the truth). Lesion-wise figures are
:mod:`brats.volume.lesions`'.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

import numpy as np
import numpy.typing as npt

from brats.volume.geometry import bounding_box
from brats.volume.labels import N_CLASSES, REGIONS, LabelScheme, SchemeLike, scheme_named
from brats.volume.lesions import (
    CROSS_TISSUE,
    LesionScores,
    LesionSettings,
    lesion_scores,
    region_settings,
    tissue_lesion_scores,
)
from brats.volume.surfaces import (
    Spacing,
    as_masks,
    as_spacing,
    hausdorff,
    hd95,
    surface,
    surface_distances,
    surface_figures,
    volume_diagonal,
)

__all__ = [
    "METRIC_KEYS",
    "dice",
    "evaluate_case",
    "hausdorff",
    "hd95",
    "iou",
    "metric_keys",
    "precision",
    "recall",
    "surface",
    "surface_distances",
    "volume_diagonal",
]

FOREGROUND_CLASSES: Final = tuple(range(1, N_CLASSES))
"""Internal classes that get per-class metrics (background 0 is left out)."""

CLASS_METRICS: Final = ("dice", "iou", "precision", "recall")
REGION_METRICS: Final = ("dice", "hd95")
LESION_METRICS: Final = (
    "lesion_dice",
    "lesion_hd95",
    "lesion_tp",
    "lesion_fp",
    "lesion_fn",
    "nsd",
    "sensitivity",
    "specificity",
)
"""Per-region figures after the whole-volume ones: lesion-wise (:mod:`brats.volume.lesions`),
then NSD, sensitivity and specificity."""

METRIC_KEYS: Final[tuple[str, ...]] = (
    *(f"{m}_{r}" for r in REGIONS for m in REGION_METRICS),
    *(f"{m}_class{c}" for c in FOREGROUND_CLASSES for m in CLASS_METRICS),
    "accuracy",
    *(f"{m}_{r}" for r in REGIONS for m in LESION_METRICS),
)
"""The keys of :func:`evaluate_case` for BraTS glioma, in report-column order. Kept stable
(reports use them): new keys are only ever appended."""


def metric_keys(scheme: SchemeLike | None = None) -> tuple[str, ...]:
    """The keys of :func:`evaluate_case` for ``scheme``, in report-column order
    (:data:`METRIC_KEYS` for BraTS glioma)."""
    s = scheme_named(scheme)
    regions = tuple(s.regions)
    return (
        *(f"{m}_{r}" for r in regions for m in REGION_METRICS),
        *(f"{m}_class{c}" for c in range(1, s.n_classes) for m in CLASS_METRICS),
        "accuracy",
        *(f"{m}_{r}" for r in regions for m in LESION_METRICS),
    )


def dice(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice coefficient ``2|P∩T| / (|P| + |T|)`` of two boolean masks of the same shape.

    Both empty -> 1.0; one empty -> 0.0.
    """
    return _dice_of(*_counts(*as_masks(pred, truth)))


def iou(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Intersection over union (Jaccard) of two boolean masks. Both empty -> 1.0."""
    return _iou_of(*_counts(*as_masks(pred, truth)))


def precision(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """``|P∩T| / |P|``. Both empty -> 1.0; empty prediction, non-empty truth -> 0.0."""
    n_p, n_t, n_pt = _counts(*as_masks(pred, truth))
    return _ratio(n_pt, n_p, other=n_t)


def recall(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """``|P∩T| / |T|`` (sensitivity).

    Both empty -> 1.0; empty truth, non-empty prediction -> 0.0.
    """
    n_p, n_t, n_pt = _counts(*as_masks(pred, truth))
    return _ratio(n_pt, n_t, other=n_p)


def evaluate_case(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    spacing: Spacing = (1.0, 1.0, 1.0),
    lesions: LesionSettings | None = None,
    *,
    scheme: SchemeLike | None = None,
    lesion_metric: str = "brats2023",
    nsd_tolerance_mm: float | None = None,
) -> dict[str, float]:
    """All metrics of one case, as a flat dict with the keys of :func:`metric_keys`.

    Args:
        pred: predicted internal labels of ``scheme``, ``(D, H, W)`` integers.
        truth: reference internal labels, same shape.
        spacing: voxel size in mm per axis, in the arrays' axis order.
        lesions: the parameters of the lesion-wise figures and NSD for every region;
            ``None``: each region's settings for the scheme's challenge under
            ``lesion_metric`` (:func:`brats.volume.lesions.region_settings`).
        scheme: the labels' scheme (default BraTS glioma).
        lesion_metric: ``brats2023`` or ``brats2024``: which challenge year's lesion-wise
            rules score the case when ``lesions`` is ``None``. Under ``brats2024`` the
            regions that are one tissue of :data:`brats.volume.lesions.CROSS_TISSUE` are
            regrouped across tissues; a class is that tissue by what it is, not only by its
            name (:data:`TISSUE_OF`: BraTS 2020's ``NCR`` is ``NETC``, its ``ED`` ``SNFH``), so
            ``brats2020`` and ``brats2023`` labels score alike.
        nsd_tolerance_mm: the NSD tolerance of every region, on its own: it changes no
            lesion-wise rule. ``None``: that of ``lesions``, else of the region's settings.

    Returns:
        ``dice_WT``, ``hd95_WT``, ... for the scheme's regions; ``dice_class1``,
        ``iou_class1``, ``precision_class1``, ``recall_class1``, ... for its classes;
        ``accuracy`` (fraction of voxels whose class is right, background
        included); per region ``lesion_dice_WT``, ``lesion_hd95_WT``, ``lesion_tp_WT``,
        ``lesion_fp_WT``, ``lesion_fn_WT``, ``nsd_WT``, ``sensitivity_WT`` and
        ``specificity_WT`` (the lesion-wise ones: :mod:`brats.volume.lesions`). Every value
        is a finite Python float (the lesion counts are whole numbers).

    Raises:
        ValueError: bad labels, shapes or spacing, or a tolerance that is not a finite
            number >= 0.
    """
    s = scheme_named(scheme)
    p = _labels(pred, "pred", s.n_classes)
    t = _labels(truth, "truth", s.n_classes)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from truth shape {t.shape}")
    sampling = as_spacing(spacing, p.ndim)
    diagonal = volume_diagonal(p.shape, sampling)
    size = p.size
    # Outside the bounding box of everything labelled, both volumes are background: no
    # count below changes, and a brain volume shrinks to its tumour. The margin leaves room
    # for the lesion-wise dilation, and where tissues are regrouped for the largest of the
    # partner tissues' (which tissue_lesion_scores requires of a crop).
    settings = {
        region: lesions or region_settings(s.lesion_task, lesion_metric, region)
        for region in s.regions
    }
    if nsd_tolerance_mm is not None:  # NSD's alone; LesionSettings checks it
        settings = {r: replace(x, nsd_tolerance_mm=nsd_tolerance_mm) for r, x in settings.items()}
    tissues = _regrouped_tissues(s) if lesions is None and lesion_metric == "brats2024" else {}
    # The reference's penalty "diagonal" (meningioma radiotherapy) is the image's, in voxels.
    voxel_diagonal = float(np.sqrt(np.sum(np.square(p.shape))))
    labelled = (p != 0) | (t != 0)
    if labelled.any():
        margin = max(x.dilation for x in settings.values()) + 1
        if tissues:
            margin = max(margin, _regroup_margin(s.lesion_task))
        box = bounding_box(labelled, margin=margin).slices
        p, t = p[box], t[box]
    regrouped = _regrouped(p, t, s, tissues, sampling) if tissues else {}
    out: dict[str, float] = {}
    for region in s.regions:
        in_region = np.zeros(s.n_classes, dtype=bool)
        in_region[list(s.region_classes(region))] = True
        p_mask, t_mask = in_region[p], in_region[t]
        n_p, n_t, n_pt = _counts(p_mask, t_mask)
        out[f"dice_{region}"] = _dice_of(n_p, n_t, n_pt)
        out[f"hd95_{region}"], out[f"nsd_{region}"] = surface_figures(
            p_mask, t_mask, sampling, diagonal, settings[region].nsd_tolerance_mm
        )
        scores = regrouped.get(region) or lesion_scores(
            p_mask, t_mask, sampling, settings[region], diagonal_mm=voxel_diagonal
        )
        out[f"lesion_dice_{region}"] = scores.dice
        out[f"lesion_hd95_{region}"] = scores.hd95
        out[f"lesion_tp_{region}"] = float(scores.tp)
        out[f"lesion_fp_{region}"] = float(scores.fp)
        out[f"lesion_fn_{region}"] = float(scores.fn)
        out[f"sensitivity_{region}"] = _ratio(n_pt, n_t, other=n_p)
        out[f"specificity_{region}"] = specificity_of(n_p, n_t, n_pt, size)
    for c in range(1, s.n_classes):
        n_p, n_t, n_pt = _counts(p == c, t == c)
        out[f"dice_class{c}"] = _dice_of(n_p, n_t, n_pt)
        out[f"iou_class{c}"] = _iou_of(n_p, n_t, n_pt)
        out[f"precision_class{c}"] = _ratio(n_pt, n_p, other=n_t)
        out[f"recall_class{c}"] = _ratio(n_pt, n_t, other=n_p)
    out["accuracy"] = 1.0 - int(np.count_nonzero(p != t)) / size if size else 1.0
    return {key: out[key] for key in metric_keys(s)}


TISSUE_OF: Final[dict[str, str]] = {"NCR": "NETC", "ED": "SNFH"}
"""Class names that are a tissue of :data:`brats.volume.lesions.CROSS_TISSUE` under another
name: BraTS 2020's necrotic core ``NCR`` is the non-enhancing tumour core ``NETC`` of 2023 and
2024, its edema ``ED`` the FLAIR hyperintensity ``SNFH``. Every other class is the tissue its
name says."""


def _regrouped_tissues(s: LabelScheme) -> dict[str, str]:
    """Region -> tissue, for the scheme's regions that are one class that is a tissue BraTS
    2024 regroups (:data:`TISSUE_OF`); empty when its task regroups none."""
    rules = CROSS_TISSUE.get(s.lesion_task, {})
    out: dict[str, str] = {}
    for region, members in s.regions.items():
        if len(members) == 1 and TISSUE_OF.get(members[0], members[0]) in rules:
            out[region] = TISSUE_OF.get(members[0], members[0])
    return out


def _regroup_margin(task: str) -> int:
    """The crop margin :func:`brats.volume.lesions.tissue_lesion_scores` needs: the largest
    2024 dilation among the task's regrouped and partner tissues, plus one."""
    rules = CROSS_TISSUE[task]
    names = {n for region, partners in rules.items() for n in (region, *partners)}
    return max(region_settings(task, "brats2024", n).dilation for n in names) + 1


def _regrouped(
    p: npt.NDArray[np.uint8],
    t: npt.NDArray[np.uint8],
    s: LabelScheme,
    tissues: dict[str, str],
    spacing: Spacing,
) -> dict[str, LesionScores]:
    """BraTS 2024's lesion-wise figures of the regions ``tissues`` names (region -> tissue,
    :func:`_regrouped_tissues`), regrouped across tissues
    (:func:`brats.volume.lesions.tissue_lesion_scores`). A tissue's mask is every class that is
    that tissue (:data:`TISSUE_OF`); a tissue the scheme lacks is an empty mask. ``p`` and
    ``t`` are whole volumes or crops of at least :func:`_regroup_margin`."""
    rules = CROSS_TISSUE[s.lesion_task]
    names = {n for region, partners in rules.items() for n in (region, *partners)}
    of: dict[str, list[int]] = {n: [] for n in names}
    for i, c in enumerate(s.classes, start=1):
        tissue = TISSUE_OF.get(c.name, c.name)
        if tissue in of:
            of[tissue].append(i)
    pred = {n: np.isin(p, classes) for n, classes in of.items()}
    truth = {n: np.isin(t, classes) for n, classes in of.items()}
    scores = tissue_lesion_scores(pred, truth, spacing, s.lesion_task)
    return {region: scores[tissue] for region, tissue in tissues.items()}


def _counts(p: npt.NDArray[np.bool_], t: npt.NDArray[np.bool_]) -> tuple[int, int, int]:
    """``|P|``, ``|T|`` and ``|P & T|``: what every overlap figure is made of."""
    return int(np.count_nonzero(p)), int(np.count_nonzero(t)), int(np.count_nonzero(p & t))


def _dice_of(n_p: int, n_t: int, n_pt: int) -> float:
    return 2.0 * n_pt / (n_p + n_t) if n_p + n_t else 1.0


def _iou_of(n_p: int, n_t: int, n_pt: int) -> float:
    union = n_p + n_t - n_pt
    return n_pt / union if union else 1.0


def _ratio(numerator: int, denominator: int, *, other: int) -> float:
    if denominator:
        return numerator / denominator
    # 0/0: right only when the other mask is empty too.
    return 1.0 if other == 0 else 0.0


def _labels(labels: npt.ArrayLike, what: str, n_classes: int = N_CLASSES) -> npt.NDArray[np.uint8]:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"{what} must be a (D, H, W) label volume, got shape {arr.shape}")
    if arr.dtype.kind not in "biu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"{what} must hold integer labels, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"{what} holds labels outside the internal classes 0..{n_classes - 1} "
            f"(min {arr.min()}, max {arr.max()}); convert with brats.volume.labels.to_internal"
        )
    return arr.astype(np.uint8, copy=False)


def specificity(pred: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_], size: int) -> float:
    """``TN / (TN + FP)`` over a volume of ``size`` voxels of which ``pred`` and ``truth``
    are a crop holding every voxel either marks (1.0 when every voxel is in the truth)."""
    n_p, n_t = int(np.count_nonzero(pred)), int(np.count_nonzero(truth))
    return specificity_of(n_p, n_t, int(np.count_nonzero(pred & truth)), size)


def specificity_of(n_pred: int, n_truth: int, n_both: int, size: int) -> float:
    """Specificity from ``|P|``, ``|T|``, ``|P & T|`` and the volume's voxel count."""
    negatives = size - n_truth  # true negatives + false positives
    return (size - n_pred - n_truth + n_both) / negatives if negatives else 1.0
