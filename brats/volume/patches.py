"""Training patches: where to cut them, and cutting them. Pure numpy (the transforms that
follow are :mod:`brats.volume.augment`).

Images are ``(C, D, H, W)`` (channels first, as stored); labels ``(D, H, W) uint8`` internal
classes. A patch keeps that layout; :func:`to_channels_last` makes the network's
``(D, H, W, C)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from brats.volume.geometry import Shape3


def sample_centers(
    label: npt.NDArray[np.uint8] | None,
    shape: Shape3,
    patch_size: Shape3,
    n: int,
    rng: np.random.Generator,
    *,
    tumor_fraction: float = 1.0 / 3.0,
    balance_classes: bool = False,
) -> npt.NDArray[np.int64]:
    """Centres of ``n`` patches: about ``tumor_fraction`` of them on a tumor voxel.

    The others are uniform over the positions where the patch fits (or the volume's centre
    on an axis shorter than the patch). A tumor centre is drawn uniformly among tumor voxels,
    so every case's tumor is seen; with ``balance_classes`` (nnU-Net's foreground
    oversampling) a class is first drawn uniformly among the tumor classes present, then a
    voxel of it, so a small necrotic or enhancing core is a centre as often as the edema.

    Returns:
        ``(n, 3) int64`` voxel indices.
    """
    n_tumor = int(rng.binomial(n, tumor_fraction)) if label is not None else 0
    centers = np.empty((n, 3), dtype=np.int64)
    half = np.asarray(patch_size) // 2
    size = np.asarray(shape)
    lo = np.minimum(half, size // 2)
    hi = np.maximum(size - (np.asarray(patch_size) - half), lo)
    for axis in range(3):
        centers[:, axis] = rng.integers(lo[axis], hi[axis] + 1, size=n)
    if n_tumor and label is not None:
        flat = label.ravel()
        tumor = np.flatnonzero(flat)
        if tumor.size and balance_classes:
            values = flat[tumor]
            present = np.unique(values)
            drawn = rng.choice(present, size=n_tumor)
            chosen = np.empty(n_tumor, dtype=np.int64)
            for value in present:
                where = drawn == value
                if where.any():
                    chosen[where] = rng.choice(tumor[values == value], size=int(where.sum()))
            centers[:n_tumor] = np.stack(np.unravel_index(chosen, label.shape), axis=1)
        elif tumor.size:
            picks = np.unravel_index(rng.choice(tumor, size=n_tumor), label.shape)
            centers[:n_tumor] = np.stack(picks, axis=1)
    order = rng.permutation(n)
    return centers[order]


def extract(
    volume: npt.NDArray[Any], center: npt.ArrayLike, patch_size: Shape3, fill: float = 0
) -> npt.NDArray[Any]:
    """The ``patch_size`` box of the last three axes centred at ``center``, padded with ``fill``.

    A box that reaches past the volume is padded, so any centre inside the volume works.
    """
    c = np.asarray(center, dtype=np.int64)
    size = np.asarray(patch_size, dtype=np.int64)
    start = c - size // 2
    stop = start + size
    spatial = np.asarray(volume.shape[-3:], dtype=np.int64)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(stop, spatial)
    out = np.full((*volume.shape[:-3], *patch_size), fill, dtype=volume.dtype)
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    dst: tuple[Any, ...] = (..., *(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True)))
    src: tuple[Any, ...] = (..., *(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True)))
    out[dst] = volume[src]
    return out


def to_channels_last(image: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``(..., C, D, H, W) -> (..., D, H, W, C)``."""
    return np.moveaxis(image, -4, -1)
