"""Label conventions, classes and BraTS regions: the one home for what a label means.

Inside the library a segmentation is a ``(D, H, W) uint8`` array of *internal* classes:

    0 background, 1 necrotic / non-enhancing core (NCR), 2 edema (ED), 3 enhancing tumor (ET)

On disk BraTS 2020 (and 2018/2019) writes ET as 4, BraTS 2021/2023 writes it as 3. Reports
use the overlapping regions WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import numpy as np
import numpy.typing as npt

NCR: Final = 1
ED: Final = 2
ET: Final = 3
N_CLASSES: Final = 4
CLASS_NAMES: Final = ("background", "necrotic_core", "edema", "enhancing_tumor")

CLASS_LABELS: Final[dict[int, str]] = {
    NCR: "necrotic / non-enhancing core",
    ED: "edema",
    ET: "enhancing tumor",
}
"""What a person reads for each internal tumour class (the report's and the app's legend)."""
CLASS_COLOURS: Final[dict[int, tuple[int, int, int]]] = {
    NCR: (228, 26, 28),
    ED: (44, 160, 44),
    ET: (255, 215, 0),
}
"""The one overlay palette (RGB) of the tumour classes: necrotic core red, edema green,
enhancing tumour yellow. The report's thumbnails and the app's overlay both draw with it."""


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``(r, g, b)`` as ``#rrggbb``."""
    return "#" + "".join(f"{c:02x}" for c in rgb)


REGIONS: Final[dict[str, tuple[int, ...]]] = {
    "WT": (NCR, ED, ET),
    "TC": (NCR, ET),
    "ET": (ET,),
}
"""BraTS evaluation regions as sets of internal classes."""


class LabelConvention(StrEnum):
    """How a cohort writes its labels on disk."""

    BRATS2020 = "brats2020"
    BRATS2023 = "brats2023"


DISK_LABELS: Final[dict[LabelConvention, tuple[int, int, int, int]]] = {
    # index = internal class, value = label on disk
    LabelConvention.BRATS2020: (0, 1, 2, 4),
    LabelConvention.BRATS2023: (0, 1, 2, 3),
}


class LabelError(ValueError):
    """A segmentation holds a label that its convention does not define."""


def _lookup(source: tuple[int, ...], target: tuple[int, ...]) -> npt.NDArray[np.int16]:
    """A 256-entry table mapping ``source[i] -> target[i]``; every other value maps to -1."""
    table = np.full(256, -1, dtype=np.int16)
    table[list(source)] = target
    return table


def to_internal(seg: npt.ArrayLike, convention: LabelConvention | str) -> npt.NDArray[np.uint8]:
    """Convert a segmentation from its on-disk convention to internal classes.

    Args:
        seg: integer-valued label volume of any shape (float arrays from nibabel are accepted
            when every value is a whole number).
        convention: the cohort's on-disk convention.

    Returns:
        ``uint8`` array of the same shape with values in ``{0, 1, 2, 3}``.

    Raises:
        LabelError: a value that the convention does not define (a "stray" label), or a
            non-integer value.
    """
    convention = LabelConvention(convention)
    arr = np.asarray(seg)
    if arr.dtype.kind == "f" and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise LabelError("segmentation has non-integer or non-finite values")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise LabelError(f"label values outside 0..255: min {arr.min()}, max {arr.max()}")
    disk = DISK_LABELS[convention]
    table = _lookup(disk, tuple(range(N_CLASSES)))
    out = table[arr.astype(np.uint8, copy=False)]
    if np.any(out < 0):
        stray = sorted(set(np.unique(arr).astype(int).tolist()) - set(disk))
        raise LabelError(
            f"labels {stray} are not in the {convention.value} convention {sorted(disk)}"
        )
    return out.astype(np.uint8)


def to_disk(labels: npt.ArrayLike, convention: LabelConvention | str) -> npt.NDArray[np.uint8]:
    """Convert internal classes ``{0..3}`` to a cohort's on-disk convention (uint8)."""
    convention = LabelConvention(convention)
    arr = np.asarray(labels)
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise LabelError(f"internal labels must be in 0..{N_CLASSES - 1}")
    return np.asarray(DISK_LABELS[convention], dtype=np.uint8)[arr.astype(np.intp, copy=False)]


def one_hot(labels: npt.ArrayLike, n_classes: int = N_CLASSES) -> npt.NDArray[np.float32]:
    """One-hot encode internal classes, channels last: ``(...,) -> (..., n_classes) float32``."""
    arr = np.asarray(labels)
    return np.eye(n_classes, dtype=np.float32)[arr.astype(np.intp, copy=False)]


def regions_to_labels(regions: npt.ArrayLike, threshold: float = 0.5) -> npt.NDArray[np.uint8]:
    """Region probabilities ``(3, D, H, W)`` (WT, TC, ET, :data:`REGIONS` order) -> ``(D, H,
    W) uint8`` internal classes, as nnU-Net decodes BraTS regions: ET where ET > threshold;
    else NCR where TC > threshold; else edema where WT > threshold; else background.
    """
    probs = np.asarray(regions)
    if probs.ndim < 1 or probs.shape[0] != len(REGIONS):
        raise ValueError(f"expected {len(REGIONS)} region channels first, got {probs.shape}")
    out = np.zeros(probs.shape[1:], dtype=np.uint8)
    for channel, label in zip(range(len(REGIONS)), (ED, NCR, ET), strict=True):
        out[probs[channel] > threshold] = label
    return out


def region_mask(labels: npt.ArrayLike, region: str) -> npt.NDArray[np.bool_]:
    """Boolean mask of a BraTS region (``"WT"``, ``"TC"`` or ``"ET"``) from internal classes."""
    try:
        classes = REGIONS[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r}; expected one of {list(REGIONS)}") from None
    return np.isin(np.asarray(labels), classes)
