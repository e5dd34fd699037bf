"""Training patches: where to cut them, cutting them, and flipping them. Pure numpy.

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
) -> npt.NDArray[np.int64]:
    """Centres of ``n`` patches: about ``tumor_fraction`` of them on a tumor voxel.

    The others are uniform over the positions where the patch fits (or the volume's centre
    on an axis shorter than the patch). A tumor centre is drawn uniformly among tumor voxels,
    so large tumors are not over-represented per voxel but every case's tumor is seen.

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
        tumor = np.flatnonzero(label)
        if tumor.size:
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


def random_flip(
    image: npt.NDArray[Any], label: npt.NDArray[Any], rng: np.random.Generator
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Flip image ``(C, D, H, W)`` and label ``(D, H, W)`` together along each axis with p=0.5."""
    for axis in range(3):
        if rng.random() < 0.5:
            image = np.flip(image, axis=axis + 1)
            label = np.flip(label, axis=axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def sample_patches(
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.uint8] | None,
    patch_size: Shape3,
    n: int,
    rng: np.random.Generator,
    *,
    tumor_fraction: float = 1.0 / 3.0,
    flip: bool = True,
) -> list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]]:
    """``n`` random (image ``(C, *patch_size) float32``, label ``patch_size uint8``) pairs."""
    spatial = (int(image.shape[1]), int(image.shape[2]), int(image.shape[3]))
    centers = sample_centers(label, spatial, patch_size, n, rng, tumor_fraction=tumor_fraction)
    if label is None:
        label = np.zeros(spatial, dtype=np.uint8)
    out = []
    for center in centers:
        x = extract(image, center, patch_size).astype(np.float32)
        y = extract(label, center, patch_size)
        if flip:
            x, y = random_flip(x, y, rng)
        out.append((x, y))
    return out


def to_channels_last(image: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``(..., C, D, H, W) -> (..., D, H, W, C)``."""
    return np.moveaxis(image, -4, -1)
