"""Slices of a case as pictures for a person to look through (the app's viewer): grey levels
windowed over the whole volume, one slice in any of the three views with the label scheme's
classes blended over it, and the legend of those colours.

Volumes are ``(C, D, H, W)``, spatial axes in the NIfTI voxel order (x, y, z as BraTS stores
them): an axial view fixes z, coronal fixes y, sagittal fixes x.
"""

from __future__ import annotations

import html
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from brats.volume.labels import SchemeLike, scheme_named

VIEWS: Final[dict[str, int]] = {"axial": 2, "coronal": 1, "sagittal": 0}
"""View name -> the spatial axis (of ``D, H, W``) it holds fixed."""


def display_volume(
    image: npt.NDArray[np.floating], percentiles: tuple[float, float] = (0.5, 99.5)
) -> npt.NDArray[np.uint8]:
    """``(C, D, H, W) -> (C, D, H, W) uint8`` grey levels, one window per channel.

    Each channel's window spans the given percentiles of its nonzero voxels over the whole
    volume (never per slice, so brightness compares across slices); background stays black.
    """
    out = np.zeros(image.shape, dtype=np.uint8)
    for c in range(image.shape[0]):
        channel = image[c]
        values = channel[channel != 0]
        if values.size == 0:
            continue
        lo, hi = (float(v) for v in np.percentile(values, percentiles))
        span = hi - lo if hi > lo else 1.0
        scaled = np.clip((channel.astype(np.float32) - lo) / span, 0.0, 1.0) * 255.0
        out[c] = np.rint(scaled).astype(np.uint8)
    return out


def render_slice(
    image: npt.NDArray[Any],
    labels: npt.NDArray[np.integer] | None,
    channel: int,
    axis: str,
    index: int,
    show_mask: bool = True,
    *,
    alpha: float = 0.45,
    scheme: SchemeLike | None = None,
) -> npt.NDArray[np.uint8]:
    """One slice as an RGB picture, with the tumor classes over it.

    Args:
        image: ``(C, D, H, W)``; ``uint8`` is taken as grey levels
            (:func:`display_volume`), anything else gets its channel's whole-volume window.
        labels: ``(D, H, W)`` internal classes, or ``None``.
        channel: which channel to show.
        axis: a :data:`VIEWS` name.
        index: the slice along that view's axis (clipped to the volume).
        show_mask: blend the scheme's colours (:meth:`LabelScheme.colours`) over its classes.
        alpha: the overlay's opacity.
        scheme: the label scheme of ``labels`` (``None``: BraTS glioma).

    Returns:
        ``(rows, cols, 3) uint8``, the plane turned a quarter so that the second in-plane axis
        runs up the picture.
    """
    if axis not in VIEWS:
        raise ValueError(f"axis must be one of {list(VIEWS)}, got {axis!r}")
    if not 0 <= channel < image.shape[0]:
        raise ValueError(f"channel {channel} of an image with {image.shape[0]} channels")
    fixed = VIEWS[axis]
    volume = image[channel]
    grey_volume = volume if volume.dtype == np.uint8 else display_volume(volume[None])[0]
    index = int(np.clip(index, 0, volume.shape[fixed] - 1))
    grey = np.rot90(np.take(grey_volume, index, axis=fixed)).astype(np.float32)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if show_mask and labels is not None:
        plane = np.rot90(np.take(labels, index, axis=fixed))
        for cls, colour in scheme_named(scheme).colours().items():
            hit = plane == cls
            rgb[hit] = (1.0 - alpha) * rgb[hit] + alpha * np.asarray(colour, np.float32)
    return np.ascontiguousarray(np.rint(rgb).astype(np.uint8))


def legend_html(scheme: SchemeLike | None = None) -> str:
    """The overlay legend: a colour swatch, the short name and the text of each class of
    ``scheme`` (``None``: BraTS glioma), escaped (a model's scheme may come from its json)."""
    items = []
    for c in scheme_named(scheme).classes:
        r, g, b = c.colour
        swatch = (
            f"<span style='display:inline-block;width:1em;height:1em;"
            f"background:rgb({r},{g},{b});margin-right:0.4em;vertical-align:middle'></span>"
        )
        text = html.escape(f"{c.name}: {c.text}")
        items.append(f"<span style='margin-right:1.5em'>{swatch}{text}</span>")
    return "<div>" + "".join(items) + "</div>"
