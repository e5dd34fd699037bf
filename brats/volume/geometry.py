"""Where a volume's voxels sit: bounding boxes, crops and their inverse, centred pad/crop.

Volumes have their three spatial axes last, in the NIfTI file's voxel order; any leading axes
(channels) are carried along untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Shape3 = tuple[int, int, int]


@dataclass(frozen=True)
class CropBox:
    """Where a crop sits in the original grid: ``original[start:stop]`` per spatial axis."""

    start: Shape3
    stop: Shape3
    shape: Shape3
    """The original (uncropped) spatial shape."""

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (
            slice(self.start[0], self.stop[0]),
            slice(self.start[1], self.stop[1]),
            slice(self.start[2], self.stop[2]),
        )

    @property
    def size(self) -> Shape3:
        return (
            self.stop[0] - self.start[0],
            self.stop[1] - self.start[1],
            self.stop[2] - self.start[2],
        )


def bounding_box(mask: npt.NDArray[np.bool_], margin: int = 0) -> CropBox:
    """Smallest box holding every True voxel of a ``(D, H, W)`` mask, grown by ``margin``
    voxels on each side and clipped to the volume.

    An empty mask gives the whole volume.
    """
    if mask.ndim != 3:
        raise ValueError(f"bounding_box needs a (D, H, W) mask, got shape {mask.shape}")
    shape = (int(mask.shape[0]), int(mask.shape[1]), int(mask.shape[2]))
    if not mask.any():
        return CropBox((0, 0, 0), shape, shape)
    start: list[int] = []
    stop: list[int] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        start.append(max(int(hits[0]) - margin, 0))
        stop.append(min(int(hits[-1]) + 1 + margin, shape[axis]))
    return CropBox((start[0], start[1], start[2]), (stop[0], stop[1], stop[2]), shape)


def crop(volume: npt.NDArray[Any], box: CropBox) -> npt.NDArray[Any]:
    """Crop the last three axes of ``volume`` to ``box`` (a view, not a copy)."""
    return volume[(..., *box.slices)]


def paste_back(cropped: npt.NDArray[Any], box: CropBox, fill: float = 0) -> npt.NDArray[Any]:
    """Inverse of :func:`crop`: place ``cropped`` into a volume of the original shape.

    Leading axes (channels) are kept; everything outside the box is ``fill``.

    Raises:
        ValueError: ``cropped``'s spatial shape is not the box's size.
    """
    if tuple(cropped.shape[-3:]) != box.size:
        raise ValueError(f"crop of shape {cropped.shape[-3:]} does not fit box {box.size}")
    out = np.full((*cropped.shape[:-3], *box.shape), fill, dtype=cropped.dtype)
    out[(..., *box.slices)] = cropped
    return out


def pad_or_crop(
    volume: npt.NDArray[Any], size: tuple[int, ...], fill: float = 0
) -> npt.NDArray[Any]:
    """Center-pad or center-crop the last ``len(size)`` axes of ``volume`` to ``size``.

    Applying it again with the original size undoes it (cropped-away voxels come back as
    ``fill``).
    """
    n = len(size)
    spatial = volume.shape[-n:]
    out = np.full((*volume.shape[:-n], *size), fill, dtype=volume.dtype)
    src: list[slice] = []
    dst: list[slice] = []
    for have, want in zip(spatial, size, strict=True):
        if have >= want:
            lo = (have - want) // 2
            src.append(slice(lo, lo + want))
            dst.append(slice(0, want))
        else:
            lo = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(lo, lo + have))
    dst_index: tuple[Any, ...] = (..., *dst)
    src_index: tuple[Any, ...] = (..., *src)
    out[dst_index] = volume[src_index]
    return out
