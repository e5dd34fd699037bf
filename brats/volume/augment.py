"""nnU-Net's default training augmentation for one patch. Pure numpy and scipy.

Images are ``(C, D, H, W) float32`` (channels first), labels ``(D, H, W) uint8`` internal
classes. Every function takes its randomness from an explicit :class:`numpy.random.Generator`
and returns new arrays; no input is modified. The intensity transforms live in
:mod:`brats.volume.intensity` and are re-exported here.

:func:`augment_patch` runs the whole pipeline in nnU-Net's order: rotation and scaling (the
patch is sampled from the whole volume, so a rotated patch has no empty corners where the volume
goes on), Gaussian noise, Gaussian blur, brightness, contrast, simulated low resolution,
inverted gamma, gamma, mirroring; then, if enabled, the two site transforms that are not
nnU-Net's (:meth:`Augmentation.sites`): a random intensity curve and a bias field.
Interpolation is linear for the image (nnU-Net: cubic) and nearest for the label, so a label
never takes a value it did not have (or 0 past the volume).

Cost, for a ``(4, 128, 128, 128)`` patch from a ``160^3`` volume on one CPU core: a plain cut
(no rotation or scaling) is a copy, about 0.02 s; a rotated or scaled patch is one linear
``map_coordinates`` per channel (about 0.15 s each) plus a nearest one for the label, about
0.9 s in all, which dominates; the intensity transforms are a few whole-array passes each and
fire only with their probabilities, so nnU-Net's defaults average about 0.2 s per patch.
"""

from __future__ import annotations

__all__ = [
    "Augmentation",
    "augment_patch",
    "bias_field",
    "brightness",
    "contrast",
    "gamma",
    "gaussian_blur",
    "gaussian_noise",
    "histogram_shift",
    "low_resolution",
    "mirror",
    "rotation_matrix",
    "seeded_rng",
    "spatial_patch",
]

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from brats.volume.geometry import Shape3
from brats.volume.intensity import (
    FloatRange,
    bias_field,
    brightness,
    check_image,
    contrast,
    draw_factor,
    gamma,
    gaussian_blur,
    gaussian_noise,
    histogram_shift,
    low_resolution,
)
from brats.volume.patches import extract


@dataclass(frozen=True)
class Augmentation:
    """Kinds and probabilities of nnU-Net's default augmentation (v2 trainer defaults).

    Each ``p_*`` is the probability that a transform is applied to a sample; ``p_*_per_channel``
    is, once it is, the probability for each channel. Ranges are ``(low, high)`` and a value is
    drawn uniformly in them unless said otherwise.

    Attributes:
        p_rotation: rotate the patch; the angle about each axis is uniform in
            ``±max_rotation_deg`` degrees.
        p_scaling: scale the patch by one factor for all axes, drawn from ``scale_range`` by
            batchgenerators' rule (half the time below 1, half above). The sampled grid is
            scaled by the factor, so a factor above 1 zooms out (shows more of the volume).
        p_noise: add Gaussian noise, the same standard deviation for all channels, drawn from
            ``noise_variance`` (batchgenerators uses the drawn value as the standard deviation).
        p_blur: blur each channel with probability ``p_blur_per_channel``, with a sigma drawn
            per channel and per axis from ``blur_sigma`` (voxels).
        p_brightness: multiply each channel by a factor from ``brightness_range``.
        p_contrast: scale each channel around its mean by a factor from ``contrast_range``
            (batchgenerators' rule), then clip to the channel's original ``[min, max]``.
        p_low_res: downsample each channel with probability ``p_low_res_per_channel`` by a zoom
            from ``low_res_zoom`` (nearest) and bring it back to its shape (linear).
        p_gamma_inverted, p_gamma: gamma from ``gamma_range`` per channel, keeping each
            channel's mean and standard deviation; the inverted one is applied to ``-x``.
        mirror_axes: spatial axes (0, 1, 2 of ``D, H, W``) each flipped with probability 0.5.
        p_histogram_shift: map each channel through a random monotone curve with a number of
            control points from ``histogram_control_points``
            (:func:`~brats.volume.intensity.histogram_shift`). Not nnU-Net's: off by default.
        p_bias_field: shade each channel with a smooth multiplicative field of coefficients up
            to ``bias_coefficient`` (:func:`~brats.volume.intensity.bias_field`). Not
            nnU-Net's: off by default.
    """

    p_rotation: float = 0.2
    max_rotation_deg: float = 30.0
    p_scaling: float = 0.2
    scale_range: FloatRange = (0.7, 1.4)
    p_noise: float = 0.1
    noise_variance: FloatRange = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: FloatRange = (0.5, 1.0)
    p_blur_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_range: FloatRange = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: FloatRange = (0.75, 1.25)
    p_low_res: float = 0.25
    low_res_zoom: FloatRange = (0.5, 1.0)
    p_low_res_per_channel: float = 0.5
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: FloatRange = (0.7, 1.5)
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    p_histogram_shift: float = 0.0
    histogram_control_points: tuple[int, int] = (5, 10)
    p_bias_field: float = 0.0
    bias_coefficient: float = 0.4

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.startswith("p_"):
                p = getattr(self, f.name)
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"{f.name} must be a probability in [0, 1], got {p}")
        if not (math.isfinite(self.max_rotation_deg) and self.max_rotation_deg >= 0):
            raise ValueError(f"max_rotation_deg must be >= 0, got {self.max_rotation_deg}")
        _check_range("scale_range", self.scale_range, positive=True)
        _check_range("noise_variance", self.noise_variance, positive=False)
        _check_range("blur_sigma", self.blur_sigma, positive=False)
        _check_range("brightness_range", self.brightness_range, positive=True)
        _check_range("contrast_range", self.contrast_range, positive=True)
        _check_range("low_res_zoom", self.low_res_zoom, positive=True)
        if self.low_res_zoom[1] > 1:
            raise ValueError(f"low_res_zoom must not exceed 1, got {self.low_res_zoom}")
        _check_range("gamma_range", self.gamma_range, positive=True)
        low, high = self.histogram_control_points
        if not 3 <= low <= high:
            raise ValueError(
                f"histogram_control_points must be (low, high) with 3 <= low <= high, "
                f"got {self.histogram_control_points}"
            )
        if not (math.isfinite(self.bias_coefficient) and self.bias_coefficient >= 0):
            raise ValueError(f"bias_coefficient must be >= 0, got {self.bias_coefficient}")
        axes = tuple(self.mirror_axes)
        if len(set(axes)) != len(axes) or not set(axes) <= {0, 1, 2}:
            raise ValueError(f"mirror_axes must be distinct axes among 0, 1, 2, got {axes}")

    @classmethod
    def none(cls) -> Augmentation:
        """No augmentation at all: every probability 0 and no mirroring (the identity)."""
        return cls(
            p_rotation=0.0,
            p_scaling=0.0,
            p_noise=0.0,
            p_blur=0.0,
            p_blur_per_channel=0.0,
            p_brightness=0.0,
            p_contrast=0.0,
            p_low_res=0.0,
            p_low_res_per_channel=0.0,
            p_gamma_inverted=0.0,
            p_gamma=0.0,
            mirror_axes=(),
        )

    @classmethod
    def sites(cls) -> Augmentation:
        """nnU-Net's defaults plus the two site transforms, each with probability 0.3: scans
        from other scanners differ in tissue contrast and shading (MONAI's RandHistogramShift
        and RandBiasField kinds)."""
        return cls(p_histogram_shift=0.3, p_bias_field=0.3)

    @classmethod
    def flips_only(cls) -> Augmentation:
        """Only mirroring, on every axis."""
        return replace(cls.none(), mirror_axes=(0, 1, 2))


def _check_range(name: str, value: FloatRange, *, positive: bool) -> None:
    if len(value) != 2:
        raise ValueError(f"{name} must be (low, high), got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{name} must be finite with low <= high, got {value!r}")
    if positive and low <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not positive and low < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_label(label: npt.NDArray[Any], image: npt.NDArray[Any]) -> None:
    if label.ndim != 3 or label.shape != image.shape[1:]:
        raise ValueError(
            f"label must be (D, H, W) = {image.shape[1:]} like the image, got {label.shape}"
        )


def _check_patch(center: npt.ArrayLike, patch_size: Shape3) -> tuple[npt.NDArray[np.int64], Shape3]:
    size = tuple(patch_size)
    if len(size) != 3 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise ValueError(f"patch_size must be 3 positive ints, got {patch_size!r}")
    c = np.asarray(center)
    if c.shape != (3,) or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"center must be 3 ints, got {center!r}")
    return c.astype(np.int64), (int(size[0]), int(size[1]), int(size[2]))


def rotation_matrix(angles_rad: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``(3, 3)`` rotation by ``angles_rad[k]`` about spatial axis ``k``, composed ``R0 R1 R2``.

    The rotation about axis 0 turns the (1, 2) plane, and so on; a positive angle turns axis
    ``k + 1`` towards axis ``k + 2`` (indices mod 3) in the matrix's action on voxel offsets.
    """
    a = np.asarray(angles_rad, dtype=np.float64)
    if a.shape != (3,):
        raise ValueError(f"angles_rad must be 3 angles, got shape {a.shape}")
    out = np.eye(3)
    for axis in range(3):
        i, j = (axis + 1) % 3, (axis + 2) % 3
        c, s = math.cos(a[axis]), math.sin(a[axis])
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = out @ r
    return out


def spatial_patch(
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.uint8] | None,
    center: npt.ArrayLike,
    patch_size: Shape3,
    matrix: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """The ``patch_size`` patch at ``center``, its grid mapped through ``matrix`` into the volume.

    Patch voxel ``i`` (per axis) sits at offset ``i - patch_size // 2`` from ``center``, as in
    :func:`brats.volume.patches.extract`; it is read at ``center + matrix @ offset`` in the
    source, linearly for the image and nearest for the label, with the volume extended by zeros
    (``mode="grid-constant"``: a point a rounding error outside the edge still reads the edge
    voxel, and the image fades to 0 over the last voxel past it). So the identity
    gives exactly ``extract``; a rotation turns the patch about ``center``; a scale above 1 shows
    a larger region. A missing label becomes zeros.

    Returns:
        image patch ``(C, *patch_size) float32`` and label patch ``patch_size uint8``, both
        C-contiguous.
    """
    check_image(image)
    if label is not None:
        _check_label(label, image)
    c, size = _check_patch(center, patch_size)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (3, 3) or not np.isfinite(m).all():
        raise ValueError(f"matrix must be a finite (3, 3) array, got shape {m.shape}")
    if np.array_equal(m, np.eye(3)):
        x = np.ascontiguousarray(extract(image, c, size), dtype=np.float32)
        if label is None:
            return x, np.zeros(size, dtype=np.uint8)
        return x, np.ascontiguousarray(extract(label, c, size), dtype=np.uint8)

    offsets = [np.arange(n, dtype=np.float32) - np.float32(n // 2) for n in size]
    g0, g1, g2 = offsets[0][:, None, None], offsets[1][None, :, None], offsets[2][None, None, :]
    m32 = m.astype(np.float32)
    coords = np.empty((3, *size), dtype=np.float32)
    for k in range(3):
        coords[k] = np.float32(c[k]) + m32[k, 0] * g0 + m32[k, 1] * g1 + m32[k, 2] * g2

    source = image if image.dtype == np.float32 else image.astype(np.float32)
    out = np.empty((image.shape[0], *size), dtype=np.float32)
    for ch in range(image.shape[0]):
        ndimage.map_coordinates(
            source[ch],
            coords,
            output=out[ch],
            order=1,
            mode="grid-constant",
            cval=0.0,
            prefilter=False,
        )
    if label is None:
        return out, np.zeros(size, dtype=np.uint8)
    y = np.empty(size, dtype=np.uint8)
    ndimage.map_coordinates(
        np.asarray(label, dtype=np.uint8), coords, output=y, order=0, mode="grid-constant", cval=0
    )
    return out, y


def mirror(
    image: npt.NDArray[Any],
    label: npt.NDArray[Any],
    rng: np.random.Generator,
    axes: tuple[int, ...],
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Image ``(C, D, H, W)`` and label ``(D, H, W)`` flipped together on each of ``axes``
    (spatial axes 0..2) with probability 0.5; C-contiguous copies of the same dtypes."""
    check_image(image)
    _check_label(label, image)
    for axis in axes:
        if axis not in (0, 1, 2):
            raise ValueError(f"mirror axes must be among 0, 1, 2, got {axes}")
        if rng.random() < 0.5:
            image = np.flip(image, axis=axis + 1)
            label = np.flip(label, axis=axis)
    return np.array(image, order="C", copy=True), np.array(label, order="C", copy=True)


def augment_patch(
    image_volume: npt.NDArray[np.floating],
    label_volume: npt.NDArray[np.uint8] | None,
    center: npt.ArrayLike,
    patch_size: Shape3,
    config: Augmentation,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """One augmented training sample: the patch at ``center`` through nnU-Net's pipeline.

    In order: rotation (``p_rotation``) and scaling (``p_scaling``) while sampling the patch
    from the whole volume (a plain :func:`~brats.volume.patches.extract` if neither fires),
    then noise, blur, brightness, contrast, low resolution, inverted gamma, gamma, each with
    its probability, then mirroring, then the histogram shift and the bias field. All
    randomness comes from ``rng``, in that order; a transform of probability 0 draws nothing,
    so enabling the site transforms leaves every earlier draw as it was. A
    missing label becomes zeros. With :meth:`Augmentation.none` this is exactly ``extract``.

    Returns:
        image ``(C, *patch_size) float32`` and label ``patch_size uint8``, both C-contiguous.
    """
    check_image(image_volume)
    if label_volume is not None:
        _check_label(label_volume, image_volume)
    c, size = _check_patch(center, patch_size)

    matrix = np.eye(3)
    if rng.random() < config.p_rotation:
        limit = math.radians(config.max_rotation_deg)
        matrix = rotation_matrix(rng.uniform(-limit, limit, size=3))
    if rng.random() < config.p_scaling:
        matrix = matrix * draw_factor(rng, *config.scale_range)
    x, y = spatial_patch(image_volume, label_volume, c, size, matrix)

    if rng.random() < config.p_noise:
        x = gaussian_noise(x, rng, config.noise_variance)
    if rng.random() < config.p_blur:
        x = gaussian_blur(x, rng, config.blur_sigma, config.p_blur_per_channel)
    if rng.random() < config.p_brightness:
        x = brightness(x, rng, config.brightness_range)
    if rng.random() < config.p_contrast:
        x = contrast(x, rng, config.contrast_range)
    if rng.random() < config.p_low_res:
        x = low_resolution(x, rng, config.low_res_zoom, config.p_low_res_per_channel)
    if rng.random() < config.p_gamma_inverted:
        x = gamma(x, rng, config.gamma_range, invert=True)
    if rng.random() < config.p_gamma:
        x = gamma(x, rng, config.gamma_range, invert=False)
    if config.mirror_axes:
        x, y = mirror(x, y, rng, config.mirror_axes)
    if config.p_histogram_shift > 0 and rng.random() < config.p_histogram_shift:
        x = histogram_shift(x, rng, config.histogram_control_points)
    if config.p_bias_field > 0 and rng.random() < config.p_bias_field:
        x = bias_field(x, rng, config.bias_coefficient)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.uint8)


def seeded_rng(seed: int, epoch: int, rank: int, sample: int) -> np.random.Generator:
    """The generator for sample ``sample`` of epoch ``epoch`` on worker ``rank``.

    ``np.random.default_rng([seed, epoch, rank, sample])``: a sample's augmentation depends on
    these four numbers only, not on how many samples were drawn before it or on which process.
    """
    return np.random.default_rng([seed, epoch, rank, sample])
