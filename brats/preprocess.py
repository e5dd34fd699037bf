"""Preprocessing math: normalization, brain crop and paste-back, pad/crop, channel stacking.

Pure numpy: no Ray, no TensorFlow, no IO. Images are ``(C, D, H, W)``, one channel per
modality, spatial axes in the NIfTI file's voxel order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from brats.cases import MODALITIES
from brats.labels import LabelConvention
from brats.nifti import CaseVolumes, Limits

Shape3 = tuple[int, int, int]


class Normalization(StrEnum):
    ZSCORE = "zscore"
    """Per modality, mean 0 / std 1 over brain (nonzero) voxels; background stays 0."""
    MINMAX = "minmax"
    """Per modality, whole volume scaled to [0, 1] (the seed's scaling, minus its per-slice bug)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How a case becomes a network input. Stored in the manifest and in model.json."""

    modalities: tuple[str, ...] = MODALITIES
    normalization: Normalization = Normalization.ZSCORE
    crop_to_brain: bool = True
    crop_margin: int = 0
    dtype: str = "float16"
    """Storage dtype of the normalized image: float16 halves the cohort's size."""
    convention: LabelConvention | None = None
    """Force the on-disk label convention; by default it follows the file names."""
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names from {MODALITIES}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError("dtype must be float16 or float32")
        object.__setattr__(self, "normalization", Normalization(self.normalization))
        if self.convention is not None:
            object.__setattr__(self, "convention", LabelConvention(self.convention))

    def to_dict(self) -> dict[str, Any]:
        return {
            "modalities": list(self.modalities),
            "normalization": self.normalization.value,
            "crop_to_brain": self.crop_to_brain,
            "crop_margin": self.crop_margin,
            "dtype": self.dtype,
            "convention": self.convention.value if self.convention else None,
        }


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


@dataclass(frozen=True)
class PreparedCase:
    """A case ready for a network.

    Attributes:
        image: ``(C, D, H, W)`` normalized, cropped to ``crop``, in ``config.dtype``.
        label: ``(D, H, W) uint8`` internal classes in the same crop, or None.
        crop: where ``image`` sits in the source grid (for paste-back).
    """

    case_id: str
    image: npt.NDArray[np.floating]
    label: npt.NDArray[np.uint8] | None
    crop: CropBox
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]
    convention: LabelConvention
    checksums: dict[str, str]
    header: bytes = b""
    """The source NIfTI header (``binaryblock``): a mask written back copies its geometry."""


def brain_mask(image: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    """``(C, D, H, W) -> (D, H, W) bool``: voxels where any modality is nonzero."""
    return np.any(image != 0, axis=0)


def zscore_nonzero(
    image: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.float32]:
    """Z-score each channel over the brain mask; voxels outside the mask become 0.

    Args:
        image: ``(C, D, H, W)``.
        mask: ``(D, H, W)`` brain mask; by default :func:`brain_mask` of ``image``.

    Returns:
        ``(C, D, H, W) float32``. A channel that is constant inside the mask becomes 0 there.
        Sums are accumulated in float64. Every step runs on whole arrays: gathering the
        masked voxels (``image[c][mask]``) or masked ufuncs (``where=``) cost about ten
        times as much.
    """
    if mask is None:
        mask = brain_mask(image)
    out = np.zeros(image.shape, dtype=np.float32)
    count = int(np.count_nonzero(mask))
    if count == 0:
        return out
    for c in range(image.shape[0]):
        channel = out[c]
        np.multiply(image[c], mask, out=channel)  # zero outside the mask
        mean = channel.sum(dtype=np.float64) / count
        channel -= np.float32(mean)
        channel *= mask
        std = float(np.sqrt(np.square(channel).sum(dtype=np.float64) / count))
        if std > 0:
            channel *= np.float32(1.0 / std)
        else:
            channel.fill(0.0)
    return out


def minmax_scale(image: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """Scale each channel of ``(C, D, H, W)`` to [0, 1] over the whole volume."""
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        lo = float(image[c].min())
        hi = float(image[c].max())
        span = hi - lo
        out[c] = (image[c] - lo) / span if span > 0 else 0.0
    return out


def bounding_box(mask: npt.NDArray[np.bool_], margin: int = 0) -> CropBox:
    """Smallest box holding every True voxel of a ``(D, H, W)`` mask, grown by ``margin``.

    An empty mask gives the whole volume.
    """
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


def stack_channels(
    images: dict[str, npt.NDArray[np.float32]], modalities: tuple[str, ...]
) -> npt.NDArray[np.float32]:
    """``{modality: (D, H, W)}`` -> ``(C, D, H, W)`` in the order of ``modalities``."""
    return np.stack([images[m] for m in modalities], axis=0)


def normalize(
    image: npt.NDArray[np.floating], method: Normalization | str
) -> npt.NDArray[np.float32]:
    """Apply the configured normalization to ``(C, D, H, W)``."""
    if Normalization(method) is Normalization.ZSCORE:
        return zscore_nonzero(image)
    return minmax_scale(image)


def prepare_case(volumes: CaseVolumes, config: PreprocessConfig) -> PreparedCase:
    """Stack, normalize and crop a validated case into network input.

    The brain mask and its box come from the modalities as read; only the box is stacked
    (a BraTS brain fills about half of the 240 x 240 x 155 grid).
    """
    channels = [volumes.images[m] for m in config.modalities]
    mask = channels[0] != 0
    for channel in channels[1:]:
        mask |= channel != 0
    if volumes.label is not None:
        # A label outside the brain (rare, but seen in hand edits) must survive the crop.
        mask |= volumes.label > 0
    if config.crop_to_brain:
        box = bounding_box(mask, config.crop_margin)
    else:
        box = bounding_box(np.ones_like(mask))
    image = np.stack([crop(c, box) for c in channels], axis=0)
    image = normalize(image, config.normalization)
    label = None if volumes.label is None else np.ascontiguousarray(crop(volumes.label, box))
    return PreparedCase(
        case_id=volumes.case_id,
        image=np.ascontiguousarray(image.astype(config.dtype, copy=False)),
        label=label,
        crop=box,
        affine=volumes.affine,
        spacing=volumes.spacing,
        convention=volumes.convention,
        checksums=volumes.checksums,
        header=bytes(volumes.header.binaryblock) if volumes.header is not None else b"",
    )
