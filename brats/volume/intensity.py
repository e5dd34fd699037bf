"""Intensity augmentations for one ``(C, D, H, W)`` patch. Pure numpy and scipy.

nnU-Net's: Gaussian noise and blur, brightness, contrast, simulated low resolution and gamma.
Two site transforms that are not nnU-Net's: a random monotone intensity curve
(:func:`histogram_shift`) and a smooth multiplicative field (:func:`bias_field`).

Each takes its randomness from an explicit :class:`numpy.random.Generator` and returns a new
``float32`` array; no input is modified. :func:`brats.volume.augment.augment_patch` runs them
with their probabilities, nnU-Net's in nnU-Net's order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

FloatRange = tuple[float, float]


def draw_factor(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor from ``[low, high]`` by batchgenerators' rule.

    When the range spans 1, with probability 0.5 uniform in ``(low, 1)``, otherwise uniform in
    ``(1, high)``, so shrinking and growing are equally likely; otherwise uniform in the range.
    """
    if low < 1 < high and rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0) if low < 1 < high else low, high))


def check_image(image: npt.NDArray[Any]) -> None:
    if image.ndim != 4:
        raise ValueError(f"image must be (C, D, H, W), got shape {image.shape}")


def _as_float32(image: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    """A float32 copy of ``image`` (always a copy, so the caller may write into it)."""
    return np.array(image, dtype=np.float32, order="C", copy=True)


def _restore_stats(
    new: npt.NDArray[np.float32], mean: float, std: float
) -> npt.NDArray[np.float32]:
    """``new`` shifted and scaled in place to ``mean`` and standard deviation ``std``."""
    new_mean, new_std = new.mean(dtype=np.float64), new.std(dtype=np.float64)
    new -= np.float32(new_mean)
    new *= np.float32(std / (new_std + 1e-8))
    new += np.float32(mean)
    return new


def _stats(values: npt.NDArray[np.float32]) -> tuple[float, float]:
    return float(values.mean(dtype=np.float64)), float(values.std(dtype=np.float64))


def gaussian_noise(
    image: npt.NDArray[np.floating], rng: np.random.Generator, variance_range: FloatRange
) -> npt.NDArray[np.float32]:
    """``image`` plus zero-mean Gaussian noise, one standard deviation for all channels.

    The standard deviation is drawn uniformly from ``variance_range`` (used as a standard
    deviation, as batchgenerators does).
    """
    check_image(image)
    sigma = np.float32(rng.uniform(variance_range[0], variance_range[1]))
    out = _as_float32(image)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= sigma
    out += noise
    return out


def gaussian_blur(
    image: npt.NDArray[np.floating],
    rng: np.random.Generator,
    sigma_range: FloatRange,
    p_per_channel: float,
) -> npt.NDArray[np.float32]:
    """Each channel blurred with probability ``p_per_channel``, sigma drawn per axis (voxels)."""
    check_image(image)
    out = _as_float32(image)
    for ch in range(out.shape[0]):
        if rng.random() < p_per_channel:
            sigma = rng.uniform(sigma_range[0], sigma_range[1], size=3)
            out[ch] = ndimage.gaussian_filter(out[ch], sigma=tuple(sigma), output=np.float32)
    return out


def brightness(
    image: npt.NDArray[np.floating], rng: np.random.Generator, multiplier_range: FloatRange
) -> npt.NDArray[np.float32]:
    """Each channel multiplied by its own factor drawn uniformly from ``multiplier_range``."""
    check_image(image)
    factors = rng.uniform(multiplier_range[0], multiplier_range[1], size=image.shape[0])
    out = _as_float32(image)
    out *= np.asarray(factors, dtype=np.float32).reshape(-1, 1, 1, 1)
    return out


def contrast(
    image: npt.NDArray[np.floating], rng: np.random.Generator, contrast_range: FloatRange
) -> npt.NDArray[np.float32]:
    """Each channel scaled around its mean by its own factor, clipped to its original range.

    The factor follows batchgenerators' rule: when the range spans 1, with probability 0.5
    uniform in ``(low, 1)``, otherwise uniform in ``(1, high)``; else uniform in the range.
    """
    check_image(image)
    out = _as_float32(image)
    for ch in range(out.shape[0]):
        factor = np.float32(draw_factor(rng, contrast_range[0], contrast_range[1]))
        x = out[ch]
        lo, hi, mean = x.min(), x.max(), np.float32(x.mean(dtype=np.float64))
        x -= mean
        x *= factor
        x += mean
        np.clip(x, lo, hi, out=x)
    return out


def _resize_axis(x: npt.NDArray[np.float32], n_out: int, axis: int, *, linear: bool) -> Any:
    """``x`` resampled to ``n_out`` along ``axis``, voxel centres aligned, edges held."""
    n_in = x.shape[axis]
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    if not linear:
        idx = np.clip(np.floor(src + 0.5), 0, n_in - 1).astype(np.intp)
        return np.take(x, idx, axis=axis)
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    shape = [1] * x.ndim
    shape[axis] = n_out
    w = (src - i0).astype(np.float32).reshape(shape)
    a = np.take(x, i0, axis=axis)
    b = np.take(x, i1, axis=axis)
    b -= a
    b *= w
    a += b
    return a


def low_resolution(
    image: npt.NDArray[np.floating],
    rng: np.random.Generator,
    zoom_range: FloatRange,
    p_per_channel: float,
) -> npt.NDArray[np.float32]:
    """Each channel, with probability ``p_per_channel``, seen at a lower resolution.

    The channel is downsampled by a zoom drawn from ``zoom_range`` (the same for all axes,
    nearest neighbour) and brought back to exactly its shape by linear interpolation.
    """
    check_image(image)
    out = _as_float32(image)
    spatial = out.shape[1:]
    for ch in range(out.shape[0]):
        if rng.random() >= p_per_channel:
            continue
        zoom = rng.uniform(zoom_range[0], zoom_range[1])
        small: npt.NDArray[np.float32] = out[ch]
        for axis, n in enumerate(spatial):
            small = _resize_axis(small, max(1, round(n * zoom)), axis, linear=False)
        for axis, n in enumerate(spatial):
            small = _resize_axis(small, n, axis, linear=True)
        out[ch] = small
    return out


def gamma(
    image: npt.NDArray[np.floating],
    rng: np.random.Generator,
    gamma_range: FloatRange,
    *,
    invert: bool = False,
) -> npt.NDArray[np.float32]:
    """Each channel mapped through its own gamma curve, keeping its mean and standard deviation.

    Per channel (``x = -x`` first and last when ``invert``): rescale to ``[0, 1]`` by its
    min and range, raise to ``gamma``, scale back, then restore the old mean and standard
    deviation. ``gamma`` follows batchgenerators' rule: when the range spans 1, with probability
    0.5 uniform in ``(low, 1)``, otherwise uniform in ``(1, high)``; else uniform in the range.
    """
    check_image(image)
    out = _as_float32(image)
    for ch in range(out.shape[0]):
        g = draw_factor(rng, gamma_range[0], gamma_range[1])
        x = out[ch]
        if invert:
            np.negative(x, out=x)
        mean, std = _stats(x)
        mn = x.min()
        span = np.float32(x.max() - mn)
        x -= mn
        x /= span + np.float32(1e-7)
        np.power(x, np.float32(g), out=x)
        x *= span
        x += mn
        _restore_stats(x, mean, std)
        if invert:
            np.negative(x, out=x)
    return out


# The two site transforms below are not nnU-Net's: they follow MONAI's RandHistogramShift and
# RandBiasField (TorchIO's RandomBiasField), for scans from scanners the training set lacks.
# Both act on the foreground (voxels where any channel is nonzero: the brain, as z-scoring
# leaves it) and then restore each channel's foreground mean and standard deviation, as
# z-scoring the other site's scan would; the background keeps its value.


def _foreground(image: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    return np.any(image != 0, axis=0)


def histogram_shift(
    image: npt.NDArray[np.floating],
    rng: np.random.Generator,
    control_points: tuple[int, int],
) -> npt.NDArray[np.float32]:
    """Each channel's foreground intensities through its own random monotone curve: another
    scanner's tissue contrasts, with the tissues' order kept.

    Per channel: ``n`` control points (uniform integer in ``control_points``, both ends
    included) evenly spaced over the foreground's ``[min, max]``; the ends stay, and each inner
    point in turn moves to a uniform position between its left neighbour's new position and its
    right neighbour (MONAI's RandHistogramShift rule); intensities are mapped piecewise
    linearly, then the foreground's mean and standard deviation are restored. A channel whose
    foreground is constant, or a patch with no foreground, is returned unchanged.
    """
    check_image(image)
    out = _as_float32(image)
    mask = _foreground(out)
    for ch in range(out.shape[0]):
        n = int(rng.integers(control_points[0], control_points[1], endpoint=True))
        values = out[ch][mask]
        if values.size == 0:
            continue
        low, high = values.min(), values.max()
        if low == high:
            continue
        reference = np.linspace(low, high, n, dtype=np.float64)
        moved = reference.copy()
        for i in range(1, n - 1):
            moved[i] = rng.uniform(moved[i - 1], moved[i + 1])
        mapped = np.interp(values, reference, moved).astype(np.float32)
        out[ch][mask] = _restore_stats(mapped, *_stats(values))
    return out


def bias_field(
    image: npt.NDArray[np.floating],
    rng: np.random.Generator,
    max_coefficient: float,
    order: int = 2,
) -> npt.NDArray[np.float32]:
    """Each channel's foreground under its own smooth multiplicative field, like coil shading.

    The log field is a polynomial of degree ``1..order`` in coordinates running over ``[-1, 1]``
    along each axis of the patch, each coefficient uniform in ``±max_coefficient`` (at 0.4 and
    order 2 its standard deviation over a patch averages about 0.3), shifted to mean 0 over the
    foreground. A multiplicative field acts on raw intensities, whose zero a z-scored channel
    no longer shows: the foreground's minimum stands in for it (``x -> m + (x - m) * field``).
    Then the foreground's mean and standard deviation are restored.
    """
    check_image(image)
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    out = _as_float32(image)
    mask = _foreground(out)
    if not mask.any():
        return out
    terms = [
        (i, j, k)
        for i in range(order + 1)
        for j in range(order + 1 - i)
        for k in range(order + 1 - i - j)
        if i + j + k > 0
    ]
    powers = [
        [np.linspace(-1.0, 1.0, n, dtype=np.float32) ** p for p in range(order + 1)]
        for n in mask.shape
    ]
    for ch in range(out.shape[0]):
        coefficients = rng.uniform(-max_coefficient, max_coefficient, len(terms))
        log_field = _polynomial(powers, terms, coefficients.astype(np.float32))[mask]
        log_field -= np.float32(log_field.mean(dtype=np.float64))
        values = out[ch][mask]
        low = values.min()
        shaded = (values - low) * np.exp(log_field) + low
        out[ch][mask] = _restore_stats(shaded.astype(np.float32), *_stats(values))
    return out


def _polynomial(
    powers: list[list[npt.NDArray[np.float32]]],
    terms: list[tuple[int, int, int]],
    coefficients: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """``sum(c * z**i * y**j * x**k)`` over ``terms`` on the whole grid, ``powers[axis][p]``
    being that axis's coordinates to the power ``p``: one plane per power of the first axis
    from outer products, then one pass over the grid per plane."""
    first, second, third = powers
    field = np.zeros((first[0].size, second[0].size, third[0].size), dtype=np.float32)
    for i in range(len(first)):
        plane = np.zeros(field.shape[1:], dtype=np.float32)
        for (ti, j, k), c in zip(terms, coefficients, strict=True):
            if ti == i:
                plane += c * np.multiply.outer(second[j], third[k])
        field += first[i][:, None, None] * plane
    return field
