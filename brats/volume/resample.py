"""Voxel spacing: the target a model is trained at, and resampling to it and back.

nnU-Net's rules (its dataset fingerprint and default resampling), written here for scipy:

* :func:`target_spacing`: the median spacing of the training cases per axis; where the
  median is anisotropic (the coarsest axis more than :data:`ANISOTROPY` times the finest
  other one, with that axis also having fewer than a third of the voxels), that axis takes
  the 10th percentile of the cases' spacings instead, not finer than the other axes.
* :func:`resample_image`: third-order splines; when the case or the target is anisotropic
  (:func:`separate_axis`), each slice is resampled in plane with splines and the slice axis
  with nearest neighbour, so thick slices are not smeared into each other.
* :func:`resample_probabilities`: the same with first-order (linear) interpolation, for a
  network's outputs on their way back to the case's grid, before they are decoded.
* :func:`resample_labels`: each class's mask interpolated linearly and thresholded at 0.5
  (nearest neighbour along a separate slice axis).

A resampled grid covers the same field of view: ``shape * spacing / target``, rounded, and
interpolation treats voxels as cells (``scipy.ndimage.zoom(..., grid_mode=True)``), so the
first and last cells' outer edges stay where they were.

Volumes have their three spatial axes last, in the NIfTI file's voxel order, as everywhere
(:mod:`brats.volume.geometry`); spacings are in the same order (the header's zooms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Spacing = tuple[float, float, float]
Shape3 = tuple[int, int, int]

ANISOTROPY: Final = 3.0
"""How many times coarser than the finest axis the coarsest may be before a spacing counts as
anisotropic (nnU-Net's ``ANISO_THRESHOLD``)."""
RELATIVE_TOLERANCE: Final = 1e-3
"""Two spacings within this fraction of each other on every axis are the same spacing: a case
at the target is not resampled at all (headers store zooms as float32)."""


def as_spacing(values: Sequence[float]) -> Spacing:
    """Three positive finite voxel sizes in mm.

    Raises:
        ValueError: not three, or one is not a positive finite number.
    """
    out = tuple(float(v) for v in values)
    if len(out) != 3 or not all(np.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"a spacing is three positive voxel sizes in mm, got {list(values)}")
    return (out[0], out[1], out[2])


def same_spacing(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` and ``b`` are one spacing (within :data:`RELATIVE_TOLERANCE` per axis)."""
    return bool(np.allclose(a, b, rtol=RELATIVE_TOLERANCE, atol=0.0))


def target_spacing(spacings: Sequence[Sequence[float]], shapes: Sequence[Sequence[int]]) -> Spacing:
    """The spacing to train at, from the training cases' spacings and shapes (nnU-Net's
    ``determine_fullres_target_spacing``; see the module).

    Raises:
        ValueError: no cases, or spacings and shapes of different lengths.
    """
    if not spacings or len(spacings) != len(shapes):
        raise ValueError(f"{len(spacings)} spacings and {len(shapes)} shapes: need one per case")
    each = np.asarray(spacings, dtype=np.float64)
    target = np.percentile(each, 50, axis=0)
    size = np.percentile(np.asarray(shapes, dtype=np.float64), 50, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    finest_other = max(target[i] for i in others)
    anisotropic_spacing = target[worst] > ANISOTROPY * finest_other
    anisotropic_voxels = size[worst] * ANISOTROPY < min(size[i] for i in others)
    if anisotropic_spacing and anisotropic_voxels:
        axis_target = float(np.percentile(each[:, worst], 10))
        if axis_target < finest_other:
            axis_target = max(finest_other, axis_target) + 1e-5
        target[worst] = axis_target
    return as_spacing(target.tolist())


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> Shape3:
    """The shape of ``shape`` voxels of ``spacing`` resampled to ``target`` over the same
    field of view (at least one voxel per axis)."""
    out = [max(1, round(n * s / t)) for n, s, t in zip(shape[-3:], spacing, target, strict=True)]
    return (out[0], out[1], out[2])


def separate_axis(spacing: Sequence[float], target: Sequence[float]) -> int | None:
    """The slice axis to resample on its own, or ``None``: the coarsest axis of ``spacing``
    if it is anisotropic, else of ``target`` if that is (nnU-Net's ``get_do_separate_z``
    and ``get_lowres_axis``). With two equally coarse axes there is no single slice axis."""
    for s in (np.asarray(spacing, np.float64), np.asarray(target, np.float64)):
        if s.max() / s.min() > ANISOTROPY:
            coarsest = np.flatnonzero(s == s.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def resample_image(
    image: npt.NDArray[np.floating], shape: Sequence[int], axis: int | None, order: int = 3
) -> npt.NDArray[np.float32]:
    """``(C, D, H, W)`` (or ``(D, H, W)``) float volume -> the same on ``shape`` (three
    sizes), float32; splines of ``order`` (3 for images, 1 for probabilities), and nearest
    neighbour along ``axis`` (a spatial axis, 0-2, resampled on its own; see
    :func:`separate_axis`). Values of an order-3 spline may overshoot the input's range."""
    volume = np.asarray(image, dtype=np.float32)
    channels = volume.reshape(-1, *volume.shape[-3:])
    out = np.stack([_resample3(c, tuple(shape), axis, order) for c in channels])
    return out.reshape(*volume.shape[:-3], *out.shape[-3:])


def resample_probabilities(
    probabilities: npt.NDArray[np.floating], shape: Sequence[int], axis: int | None
) -> npt.NDArray[np.float32]:
    """``(K, d, h, w)`` network outputs -> ``(K, *shape)`` by linear interpolation (nearest
    neighbour along a separate ``axis``), clipped to [0, 1]: what is decoded on the case's
    own grid."""
    out = resample_image(probabilities, shape, axis, order=1)
    return np.clip(out, 0.0, 1.0, out=out)


def resample_labels(
    labels: npt.NDArray[np.integer], shape: Sequence[int], axis: int | None
) -> npt.NDArray[np.uint8]:
    """``(D, H, W)`` labels -> the same on ``shape``: each class's mask, in increasing
    order, interpolated linearly (nearest along ``axis``) and painted where it is >= 0.5
    (nnU-Net's ``resize_segmentation``); elsewhere background."""
    source = np.asarray(labels)
    out = np.zeros(tuple(shape), dtype=np.uint8)
    for value in np.unique(source):
        if value == 0:
            continue
        mask = _resample3((source == value).astype(np.float32), tuple(shape), axis, 1)
        out[mask >= 0.5] = value
    return out


def _resample3(
    volume: npt.NDArray[np.float32], shape: tuple[int, ...], axis: int | None, order: int
) -> npt.NDArray[np.float32]:
    """One spatial volume onto ``shape``: a tensor-product spline of ``order``, applied one
    axis at a time (nearest neighbour along ``axis``), each as a small matrix of weights."""
    out = np.asarray(volume, dtype=np.float32)
    for a in range(3):
        if out.shape[a] != shape[a]:
            out = _along(out, a, shape[a], 0 if a == axis else order)
    return out if out is not volume else out.copy()


def _along(
    volume: npt.NDArray[np.float32], axis: int, size: int, order: int
) -> npt.NDArray[np.float32]:
    """``volume`` resampled along ``axis`` to ``size`` cells over the same extent. For third
    order, the samples become B-spline coefficients first (``ndimage.spline_filter1d``,
    the edge sample repeated beyond the edge), as ``scipy.ndimage.zoom(..., grid_mode=True,
    mode="nearest")`` does for all axes at once; applied axis by axis, each output voxel costs
    4 taps per axis instead of 64, and the weights go through a matrix product."""
    if order == 3:
        volume = ndimage.spline_filter1d(volume, 3, axis=axis, output=np.float32, mode="nearest")
    weights = _weights(volume.shape[axis], size, order)
    moved = np.moveaxis(volume, axis, 0)
    flat = weights @ moved.reshape(moved.shape[0], -1)
    return np.moveaxis(flat.reshape(size, *moved.shape[1:]), 0, axis)


def _weights(n_in: int, n_out: int, order: int) -> npt.NDArray[np.float32]:
    """``(n_out, n_in)`` interpolation weights between cells of two grids over one extent:
    output cell ``j``'s centre lies at input coordinate ``(j + 0.5) n_in / n_out - 0.5``;
    nearest neighbour (0), linear (1) or cubic B-spline (3, on spline coefficients) taps,
    those beyond an edge taken from the edge cell."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5
    if order == 0:
        taps = np.floor(x + 0.5)[:, None]
        kernel = np.ones((n_out, 1))
    elif order == 1:
        base = np.floor(x)
        t = (x - base)[:, None]
        taps = base[:, None] + np.arange(2)
        kernel = np.hstack([1.0 - t, t])
    elif order == 3:
        base = np.floor(x)
        taps = base[:, None] + np.arange(-1, 3)
        kernel = _cubic_bspline(x[:, None] - taps)
    else:
        raise ValueError(f"order must be 0, 1 or 3, got {order}")
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    np.add.at(weights, (rows, np.clip(taps, 0, n_in - 1).astype(np.intp)), kernel)
    return weights.astype(np.float32)


def _cubic_bspline(d: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The cubic B-spline at distances ``d``."""
    a = np.abs(d)
    inner = (4.0 - 6.0 * a**2 + 3.0 * a**3) / 6.0
    outer = np.clip(2.0 - a, 0.0, None) ** 3 / 6.0
    return np.where(a < 1.0, inner, outer)
