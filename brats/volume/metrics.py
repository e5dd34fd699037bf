"""Exact per-case segmentation metrics: Dice, IoU, precision, recall, accuracy and HD95.

Pure numpy/scipy (no TensorFlow, no Ray): a metric is exact and per case, a loss
(:mod:`brats.train.losses`) is differentiable and batched. Inputs are *internal* label volumes
``(D, H, W)`` of integers in ``{0, 1, 2, 3}`` (see :mod:`brats.volume.labels`) and the voxel spacing
in millimetres, one value per axis in the same axis order.

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
  distance in mm to the nearest surface voxel of the other mask (exact, from
  ``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)``).
* **HD95 is the 95th percentile (numpy's linear interpolation) of the union of both directed
  sets** -- the definition of MedPy's ``hd95`` that the BraTS evaluations used. MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the larger of the two directed
  95th percentiles; the two agree when the prediction is good and differ by a few voxels on
  lopsided errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.volume.geometry import bounding_box
from brats.volume.labels import N_CLASSES, REGIONS

Spacing = Sequence[float]

FOREGROUND_CLASSES: Final = tuple(range(1, N_CLASSES))
"""Internal classes that get per-class metrics (background 0 is left out)."""

CLASS_METRICS: Final = ("dice", "iou", "precision", "recall")
REGION_METRICS: Final = ("dice", "hd95")

METRIC_KEYS: Final[tuple[str, ...]] = (
    *(f"{m}_{r}" for r in REGIONS for m in REGION_METRICS),
    *(f"{m}_class{c}" for c in FOREGROUND_CLASSES for m in CLASS_METRICS),
    "accuracy",
)
"""The keys of :func:`evaluate_case`, in report-column order. Kept stable: reports use them."""

_FACE_NEIGHBOURS: Final = ndimage.generate_binary_structure(3, 1)


def dice(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice coefficient ``2|P∩T| / (|P| + |T|)`` of two boolean masks of the same shape.

    Both empty -> 1.0; one empty -> 0.0.
    """
    p, t = _masks(pred, truth)
    denominator = int(p.sum()) + int(t.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & t)) / denominator


def iou(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Intersection over union (Jaccard) of two boolean masks. Both empty -> 1.0."""
    p, t = _masks(pred, truth)
    union = int(np.count_nonzero(p | t))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & t)) / union


def precision(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """``|P∩T| / |P|``. Both empty -> 1.0; empty prediction, non-empty truth -> 0.0."""
    p, t = _masks(pred, truth)
    return _ratio(int(np.count_nonzero(p & t)), int(p.sum()), other=int(t.sum()))


def recall(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """``|P∩T| / |T|`` (sensitivity).

    Both empty -> 1.0; empty truth, non-empty prediction -> 0.0.
    """
    p, t = _masks(pred, truth)
    return _ratio(int(np.count_nonzero(p & t)), int(t.sum()), other=int(p.sum()))


def volume_diagonal(shape: Sequence[int], spacing: Spacing) -> float:
    """Length in mm of the diagonal of a ``shape`` volume with voxel ``spacing``."""
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    return float(np.sqrt(np.sum(extent**2)))


def surface(mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Surface voxels of a 3-D boolean mask: in the mask, with a face neighbour outside it.

    Voxels on the volume border count as surface (erosion treats outside as background).
    Returns a ``bool`` array of the mask's shape.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"surface needs a 3-D mask, got shape {m.shape}")
    eroded = ndimage.binary_erosion(m, structure=_FACE_NEIGHBOURS, border_value=0)
    return m & ~eroded


def surface_distances(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Both directed surface-distance sets of two non-empty 3-D boolean masks, in mm.

    Returns:
        ``(pred_to_truth, truth_to_pred)``: 1-D ``float64`` arrays, one distance per surface
        voxel of ``pred`` (to the nearest surface voxel of ``truth``) and vice versa.

    Raises:
        ValueError: a mask is empty (there is no surface to measure from), shapes differ, or
            the spacing is not three positive finite numbers.
    """
    p, t = _masks(pred, truth)
    sampling = _spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        raise ValueError("surface distances need two non-empty masks")
    # Every surface voxel lies in the union's bounding box; one voxel of margin keeps the
    # erosion at the box edge identical to the full volume's, and distances between voxels
    # in the box do not depend on the volume around it. This makes HD95 cost what the tumour
    # costs, not what a 240 x 240 x 155 volume costs.
    box = bounding_box(p | t, margin=1).slices
    p, t = p[box], t[box]
    p_surface, t_surface = surface(p), surface(t)
    to_truth = ndimage.distance_transform_edt(~t_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~p_surface, sampling=sampling)
    return (
        np.asarray(to_truth[p_surface], dtype=np.float64),
        np.asarray(to_pred[t_surface], dtype=np.float64),
    )


def hausdorff(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing, percentile: float = 95.0
) -> float:
    """Percentile Hausdorff distance in mm between two 3-D boolean masks.

    The ``percentile`` (0..100, numpy linear interpolation) of the union of both directed
    surface-distance sets; ``percentile=100`` is the classic Hausdorff distance. Empty rules
    as in the module docstring: both empty -> 0.0, one empty -> the volume diagonal.
    """
    p, t = _masks(pred, truth)
    sampling = _spacing(spacing, p.ndim)
    return _hausdorff(p, t, sampling, percentile, volume_diagonal(p.shape, sampling))


def hd95(pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing) -> float:
    """95% Hausdorff distance in mm (see the module docstring for the definition)."""
    return hausdorff(pred, truth, spacing, percentile=95.0)


def evaluate_case(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing = (1.0, 1.0, 1.0)
) -> dict[str, float]:
    """All metrics of one case, as a flat dict with the keys of :data:`METRIC_KEYS`.

    Args:
        pred: predicted internal labels, ``(D, H, W)`` integers in ``{0, 1, 2, 3}``.
        truth: reference internal labels, same shape.
        spacing: voxel size in mm per axis, in the arrays' axis order.

    Returns:
        ``dice_WT``, ``hd95_WT``, ... for the regions of :data:`brats.volume.labels.REGIONS`;
        ``dice_class1``, ``iou_class1``, ``precision_class1``, ``recall_class1``, ... for
        classes 1..3; ``accuracy`` (fraction of voxels whose class is right, background
        included). Every value is a finite Python float.
    """
    p = _labels(pred, "pred")
    t = _labels(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from truth shape {t.shape}")
    sampling = _spacing(spacing, p.ndim)
    diagonal = volume_diagonal(p.shape, sampling)
    size = p.size
    # Outside the bounding box of everything labelled, both volumes are background: no
    # count below changes, and a brain volume shrinks to its tumour.
    labelled = (p != 0) | (t != 0)
    if labelled.any():
        box = bounding_box(labelled).slices
        p, t = p[box], t[box]
    out: dict[str, float] = {}
    for region, classes in REGIONS.items():
        in_region = np.zeros(N_CLASSES, dtype=bool)
        in_region[list(classes)] = True
        p_mask, t_mask = in_region[p], in_region[t]
        out[f"dice_{region}"] = dice(p_mask, t_mask)
        out[f"hd95_{region}"] = _hausdorff(p_mask, t_mask, sampling, 95.0, diagonal)
    for c in FOREGROUND_CLASSES:
        p_mask, t_mask = p == c, t == c
        out[f"dice_class{c}"] = dice(p_mask, t_mask)
        out[f"iou_class{c}"] = iou(p_mask, t_mask)
        out[f"precision_class{c}"] = precision(p_mask, t_mask)
        out[f"recall_class{c}"] = recall(p_mask, t_mask)
    out["accuracy"] = 1.0 - int(np.count_nonzero(p != t)) / size if size else 1.0
    return {key: out[key] for key in METRIC_KEYS}


def _hausdorff(
    p: npt.NDArray[np.bool_],
    t: npt.NDArray[np.bool_],
    sampling: tuple[float, ...],
    percentile: float,
    diagonal: float,
) -> float:
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if not has_p or not has_t:
        return diagonal
    forward, backward = surface_distances(p, t, sampling)
    return float(np.percentile(np.concatenate([forward, backward]), percentile))


def _ratio(numerator: int, denominator: int, *, other: int) -> float:
    if denominator:
        return numerator / denominator
    # 0/0: right only when the other mask is empty too.
    return 1.0 if other == 0 else 0.0


def _masks(
    pred: npt.ArrayLike, truth: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from truth shape {t.shape}")
    return p, t


def _labels(labels: npt.ArrayLike, what: str) -> npt.NDArray[np.uint8]:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"{what} must be a (D, H, W) label volume, got shape {arr.shape}")
    if arr.dtype.kind not in "biu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"{what} must hold integer labels, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise ValueError(
            f"{what} holds labels outside the internal classes 0..{N_CLASSES - 1} "
            f"(min {arr.min()}, max {arr.max()}); convert with brats.volume.labels.to_internal"
        )
    return arr.astype(np.uint8, copy=False)


def _spacing(spacing: Spacing, ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite numbers, got {spacing!r}")
    return values
