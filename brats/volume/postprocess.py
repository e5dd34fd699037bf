"""Named operations on predicted label volumes: small-ET relabeling and region volumes.

Labels are ``(D, H, W) uint8`` internal classes (see :mod:`brats.volume.labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.volume.labels import ET, NCR, REGIONS


def small_et_to_necrosis(labels: npt.NDArray[np.uint8], min_voxels: int) -> npt.NDArray[np.uint8]:
    """Relabel enhancing-tumor components smaller than ``min_voxels`` as necrotic core.

    Tiny ET specks are the commonest false positive on cases without enhancement, and ET Dice
    punishes them hardest (an empty truth scores 0 against any ET). Components are
    face-connected (6-connectivity). ``min_voxels <= 0`` returns ``labels`` itself; otherwise
    the result is a new array.
    """
    if min_voxels <= 0 or not np.any(labels == ET):
        return labels
    components, n = ndimage.label(labels == ET)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes < min_voxels)
    small = small[small > 0]
    out = labels.copy()
    out[np.isin(components, small)] = NCR
    return out


def region_volumes_ml(
    labels: npt.NDArray[np.integer], spacing: Sequence[float]
) -> dict[str, float]:
    """``{"WT": ml, "TC": ml, "ET": ml}`` of a label volume with voxels of ``spacing`` mm."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    return {
        region: float(np.isin(labels, classes).sum()) * voxel_ml
        for region, classes in REGIONS.items()
    }
