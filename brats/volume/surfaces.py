"""Mask surfaces and the distances between them: the surface of a mask, both directed
surface-distance sets, and percentile Hausdorff distances (the definitions are in
:mod:`brats.volume.metrics`).

Pure numpy/scipy. Masks are 3-D boolean arrays; spacing is the voxel size in mm per axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from brats.volume.geometry import bounding_box

Spacing = Sequence[float]


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
    # The erosion by the 6-neighbourhood, as six shifted ANDs (what binary_erosion with
    # border_value=0 computes, several times faster): a voxel stays when it and its face
    # neighbours are all in the mask; the border layer never stays.
    eroded = m.copy()
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        eroded[tuple(lo)] &= m[tuple(hi)]
        eroded[tuple(hi)] &= m[tuple(lo)]
        edge = [slice(None)] * 3
        for end in (0, -1):
            edge[axis] = slice(end, end + 1 if end == 0 else None)
            eroded[tuple(edge)] = False
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
    p, t = as_masks(pred, truth)
    sampling = as_spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        raise ValueError("surface distances need two non-empty masks")
    # Every surface voxel lies in the union's bounding box; one voxel of margin keeps the
    # erosion at the box edge identical to the full volume's, and distances between voxels
    # in the box do not depend on the volume around it. This makes HD95 cost what the tumour
    # costs, not what a 240 x 240 x 155 volume costs.
    # The nearest surface voxel of the other mask comes from a k-d tree over surface voxel
    # centres in mm: the exact Euclidean distance a distance transform of the box would give,
    # at a cost that grows with the surfaces, not with the box (false-positive specks across
    # the brain make the box most of the volume).
    box = bounding_box(p | t, margin=1).slices
    scale = np.asarray(sampling, dtype=np.float64)
    p_points = np.argwhere(surface(p[box])) * scale
    t_points = np.argwhere(surface(t[box])) * scale
    to_truth = cKDTree(t_points).query(p_points, k=1)[0]
    to_pred = cKDTree(p_points).query(t_points, k=1)[0]
    return np.asarray(to_truth, dtype=np.float64), np.asarray(to_pred, dtype=np.float64)


def hausdorff(
    pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing, percentile: float = 95.0
) -> float:
    """Percentile Hausdorff distance in mm between two 3-D boolean masks.

    The ``percentile`` (0..100, numpy linear interpolation) of the union of both directed
    surface-distance sets; ``percentile=100`` is the classic Hausdorff distance. Empty rules
    as in the module docstring: both empty -> 0.0, one empty -> the volume diagonal.
    """
    p, t = as_masks(pred, truth)
    sampling = as_spacing(spacing, p.ndim)
    return hausdorff_of(p, t, sampling, percentile, volume_diagonal(p.shape, sampling))


def hd95(pred: npt.ArrayLike, truth: npt.ArrayLike, spacing: Spacing) -> float:
    """95% Hausdorff distance in mm (see the module docstring for the definition)."""
    return hausdorff(pred, truth, spacing, percentile=95.0)


def hausdorff_of(
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


def surface_figures(
    p: npt.NDArray[np.bool_],
    t: npt.NDArray[np.bool_],
    sampling: tuple[float, ...],
    diagonal: float,
    tolerance_mm: float,
) -> tuple[float, float]:
    """``(HD95, NSD)`` of two masks from one computation of their surface distances.

    NSD is the share of both surfaces' voxels within ``tolerance_mm`` of the other surface.
    Both empty: ``(0.0, 1.0)``; one empty: ``(diagonal, 0.0)``.
    """
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0, 1.0
    if not has_p or not has_t:
        return diagonal, 0.0
    both = np.concatenate(surface_distances(p, t, sampling))
    return float(np.percentile(both, 95.0)), int(np.count_nonzero(both <= tolerance_mm)) / both.size


def normalized_surface_dice(
    pred: npt.NDArray[np.bool_],
    truth: npt.NDArray[np.bool_],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> float:
    """Share of both masks' surface voxels within ``tolerance_mm`` of the other's surface.

    Surfaces and distances as :func:`surface_distances` defines them
    (:func:`surface_figures` computes it with HD95 in one pass).
    Both masks empty: 1.0; one empty: 0.0.
    """
    p, t = as_masks(pred, truth)
    return surface_figures(p, t, as_spacing(spacing, p.ndim), 0.0, tolerance_mm)[1]


def as_masks(
    pred: npt.ArrayLike, truth: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    p = np.asarray(pred).astype(bool, copy=False)
    t = np.asarray(truth).astype(bool, copy=False)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from truth shape {t.shape}")
    return p, t


def as_spacing(spacing: Spacing, ndim: int) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be {ndim} positive finite numbers, got {spacing!r}")
    return values
