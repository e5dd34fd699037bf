"""Whole-volume prediction: sliding windows with Gaussian blending, pure numpy around a model.

:func:`sliding_window_predict` is one function with explicit arguments and no hidden state,
in the manner of MONAI's ``sliding_window_inference``: it tiles a ``(C, D, H, W)`` volume with
windows of the training patch size, runs ``predict`` on batches of windows, and blends the
overlapping outputs with a Gaussian importance map (centre voxels weigh more than window
edges, where the network saw less context). The model is any callable, so this module imports
neither TensorFlow nor Ray; :class:`brats.segment.predictor.Predictor` is what calls it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from brats.volume.geometry import Shape3, pad_or_crop
from brats.volume.patches import to_channels_last

Predict = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.floating]]
"""``(B, d, h, w, C) float32 -> (B, d, h, w, K)`` class probabilities (channels last)."""

GAUSSIAN_SIGMA_SCALE = 0.125
"""Sigma of the importance map as a fraction of the window (nnU-Net's and MONAI's 1/8)."""


def gaussian_importance(
    window: Shape3, sigma_scale: float = GAUSSIAN_SIGMA_SCALE
) -> npt.NDArray[np.float32]:
    """``window``-shaped Gaussian weights, peak 1 at the centre, never below 1e-3 (no zeros)."""
    axes = []
    for size in window:
        x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        sigma = max(size * sigma_scale, 1e-6)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype(np.float32)


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start offsets along one axis: step ``window * (1 - overlap)``, the last window flush
    with the end, so every voxel is covered and no window hangs over the edge."""
    if size <= window:
        return [0]
    step = max(int(window * (1.0 - overlap)), 1)
    starts = list(range(0, size - window, step))
    starts.append(size - window)
    return starts


def sliding_window_predict(
    image: npt.NDArray[np.floating],
    predict: Predict,
    window: Shape3,
    *,
    n_classes: int,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 2,
    flip_tta: bool = False,
) -> npt.NDArray[np.float32]:
    """Class probabilities for a whole volume.

    Args:
        image: ``(C, D, H, W)`` normalized volume, any spatial size (smaller than the window
            on some axis is fine: it is padded with zeros, the background value).
        predict: the model, see :data:`Predict`; called with at most ``batch_size`` windows.
        window: window size (the training patch size; each side divisible by ``2**depth``).
        n_classes: channels of the model's output.
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        blend: ``"gaussian"`` (default) or ``"constant"`` (plain average).
        batch_size: windows per ``predict`` call.
        flip_tta: also predict the 7 flipped versions of each window and average (8x cost).

    Returns:
        ``(K, D, H, W) float32``: at every voxel, the importance-weighted mean of the
        outputs of the windows that cover it (probabilities that sum to 1 still do).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    spatial = (int(image.shape[1]), int(image.shape[2]), int(image.shape[3]))
    padded_shape = tuple(max(s, w) for s, w in zip(spatial, window, strict=True))
    volume = np.asarray(image, dtype=np.float32)
    if padded_shape != spatial:  # a copy only where the window overhangs the volume
        volume = pad_or_crop(volume, padded_shape)

    weights = gaussian_importance(window) if blend == "gaussian" else np.ones(window, np.float32)
    probs = np.zeros((n_classes, *padded_shape), dtype=np.float32)
    norm = np.zeros(padded_shape, dtype=np.float32)
    starts = list(
        itertools.product(
            *(window_starts(s, w, overlap) for s, w in zip(padded_shape, window, strict=True))
        )
    )
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        boxes = [
            tuple(slice(o, o + w) for o, w in zip(origin, window, strict=True)) for origin in chunk
        ]
        batch = np.stack([volume[(slice(None), *box)] for box in boxes])
        out = _predict_windows(predict, to_channels_last(batch), flip_tta)
        for box, window_probs in zip(boxes, out, strict=True):
            probs[(slice(None), *box)] += np.moveaxis(window_probs, -1, 0) * weights
            norm[box] += weights
    probs /= norm
    return probs if padded_shape == spatial else pad_or_crop(probs, spatial)


def _predict_windows(
    predict: Predict, batch: npt.NDArray[np.float32], flip_tta: bool
) -> npt.NDArray[np.float32]:
    """``(B, d, h, w, C) -> (B, d, h, w, K)``, averaged over the 8 axis flips if asked."""
    if not flip_tta:
        return np.asarray(predict(batch), dtype=np.float32)
    total: npt.NDArray[np.float32] | None = None
    flips = [axes for r in range(4) for axes in itertools.combinations((1, 2, 3), r)]
    for axes in flips:
        flipped = np.flip(batch, axis=axes) if axes else batch
        out = np.asarray(predict(np.ascontiguousarray(flipped)), dtype=np.float32)
        out = np.flip(out, axis=axes) if axes else out
        total = out if total is None else total + out
    assert total is not None
    return total / np.float32(len(flips))
