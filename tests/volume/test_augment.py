"""nnU-Net-style augmentation: shapes and dtypes, identities, geometry, statistics, seeding."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from brats.volume.augment import (
    Augmentation,
    augment_patch,
    bias_field,
    brightness,
    contrast,
    gamma,
    gaussian_blur,
    gaussian_noise,
    histogram_shift,
    low_resolution,
    mirror,
    rotation_matrix,
    seeded_rng,
    spatial_patch,
)
from brats.volume.patches import extract

PATCH = (8, 8, 8)


def _volume(seed: int = 0, shape: tuple[int, ...] = (2, 12, 12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _label(shape: tuple[int, int, int] = (12, 12, 12)) -> np.ndarray:
    label = np.zeros(shape, np.uint8)
    label[3:9, 3:9, 3:9] = 2
    label[5:7, 5:7, 5:7] = 1
    label[8:10, 2:4, 6:9] = 3
    return label


def _everything() -> Augmentation:
    """Every transform fires (each per-channel draw too)."""
    return Augmentation(
        p_rotation=1.0,
        p_scaling=1.0,
        p_noise=1.0,
        p_blur=1.0,
        p_blur_per_channel=1.0,
        p_brightness=1.0,
        p_contrast=1.0,
        p_low_res=1.0,
        p_low_res_per_channel=1.0,
        p_gamma_inverted=1.0,
        p_gamma=1.0,
        p_histogram_shift=1.0,
        p_bias_field=1.0,
    )


def test_every_function_keeps_shape_and_dtype_and_leaves_input_alone():
    image = _volume()
    before = image.copy()
    rng = np.random.default_rng(0)
    outputs = [
        gaussian_noise(image, rng, (0.1, 0.1)),
        gaussian_blur(image, rng, (0.5, 1.0), 1.0),
        brightness(image, rng, (0.75, 1.25)),
        contrast(image, rng, (0.75, 1.25)),
        low_resolution(image, rng, (0.5, 0.5), 1.0),
        gamma(image, rng, (0.7, 1.5), invert=True),
        gamma(image, rng, (0.7, 1.5)),
        histogram_shift(image, rng, (5, 10)),
        bias_field(image, rng, 0.4),
    ]
    for out in outputs:
        assert out.shape == image.shape and out.dtype == np.float32
        assert out.flags.c_contiguous and not np.shares_memory(out, image)
    label = _label()
    x, y = mirror(image, label, rng, (0, 1, 2))
    assert x.shape == image.shape and x.dtype == np.float32
    assert y.shape == label.shape and y.dtype == np.uint8
    x, y = augment_patch(image, label, (6, 6, 6), PATCH, _everything(), rng)
    assert x.shape == (2, *PATCH) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == PATCH and y.dtype == np.uint8 and y.flags.c_contiguous
    np.testing.assert_array_equal(image, before)


def test_no_augmentation_is_exactly_extract_even_past_the_edge():
    image, label = _volume(), _label()
    for i, center in enumerate([(6, 6, 6), (0, 11, 2), (11, 0, 11)]):
        x, y = augment_patch(
            image, label, center, PATCH, Augmentation.none(), np.random.default_rng(i)
        )
        np.testing.assert_array_equal(x, extract(image, center, PATCH))
        np.testing.assert_array_equal(y, extract(label, center, PATCH))


def test_a_missing_label_becomes_zeros():
    _, y = augment_patch(_volume(), None, (6, 6, 6), PATCH, _everything(), seeded_rng(0, 0, 0, 0))
    assert y.shape == PATCH and not y.any()


def test_flips_only_changes_nothing_but_the_orientation():
    image, label = _volume(), _label()
    x, y = augment_patch(
        image, label, (6, 6, 6), PATCH, Augmentation.flips_only(), seeded_rng(1, 0, 0, 0)
    )
    ref_x, ref_y = extract(image, (6, 6, 6), PATCH), extract(label, (6, 6, 6), PATCH)
    candidates = []
    for flips in np.ndindex(2, 2, 2):
        axes = tuple(a for a in range(3) if flips[a])
        candidates.append((np.flip(ref_x, [a + 1 for a in axes]), np.flip(ref_y, axes)))
    assert any(np.array_equal(x, cx) and np.array_equal(y, cy) for cx, cy in candidates)


def test_labels_never_take_a_new_value_under_rotation_scaling_and_mirroring():
    image, label = _volume(), _label()
    config = replace(Augmentation.none(), p_rotation=1.0, p_scaling=1.0, mirror_axes=(0, 1, 2))
    seen: set[int] = set()
    for sample in range(10):
        _, y = augment_patch(image, label, (6, 6, 6), PATCH, config, seeded_rng(3, 0, 0, sample))
        assert set(np.unique(y).tolist()) <= {0, 1, 2, 3}
        seen |= set(np.unique(y).tolist())
    assert {0, 1, 2} <= seen  # the patches really cut through the labelled cube


def test_spatial_patch_with_the_identity_is_extract_including_padding():
    image, label = _volume(), _label()
    for center in [(6, 6, 6), (1, 10, 0), (11, 11, 11)]:
        for size in [PATCH, (5, 7, 9)]:
            x, y = spatial_patch(image, label, center, size, np.eye(3))
            np.testing.assert_array_equal(x, extract(image, center, size))
            np.testing.assert_array_equal(y, extract(label, center, size))
    # A matrix that is the identity only up to rounding takes the interpolating path: the same.
    near = np.eye(3) + 1e-9
    x, y = spatial_patch(image, label, (1, 10, 0), PATCH, near)
    np.testing.assert_allclose(x, extract(image, (1, 10, 0), PATCH), atol=1e-5)
    np.testing.assert_array_equal(y, extract(label, (1, 10, 0), PATCH))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_quarter_turn_is_rot90_of_the_extracted_patch(axis):
    image, label = _volume(4), _label()
    size, center = (7, 7, 7), (6, 5, 6)  # odd size: the grid is symmetric about the centre
    angles = np.zeros(3)
    angles[axis] = math.pi / 2
    x, y = spatial_patch(image, label, center, size, rotation_matrix(angles))
    # A positive turn about ``axis`` takes axis i = axis + 1 to axis j = axis + 2: the patch
    # voxel one step along i reads the source one step along j from the centre.
    i, j = (axis + 1) % 3, (axis + 2) % 3
    step_i = np.array([3, 3, 3])
    step_i[i] += 1
    source = np.array(center)
    source[j] += 1
    np.testing.assert_allclose(x[(slice(None), *step_i)], image[(slice(None), *source)], atol=1e-5)
    ref_x, ref_y = extract(image, center, size), extract(label, center, size)
    np.testing.assert_allclose(x, np.rot90(ref_x, 1, axes=(j + 1, i + 1)), atol=1e-5)
    np.testing.assert_array_equal(y, np.rot90(ref_y, 1, axes=(j, i)))
    assert not np.allclose(x, ref_x, atol=1e-3)


def test_rotation_matrix_is_a_rotation_and_composes_the_three_axes():
    angles = np.array([0.3, -0.7, 1.1])
    m = rotation_matrix(angles)
    np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
    assert math.isclose(np.linalg.det(m), 1.0)
    parts = [rotation_matrix(np.eye(3)[k] * angles[k]) for k in range(3)]
    np.testing.assert_allclose(m, parts[0] @ parts[1] @ parts[2], atol=1e-12)
    # About axis 0, axes 1 and 2 turn; axis 0 stays.
    np.testing.assert_allclose(parts[0] @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    assert not np.allclose(parts[0] @ [0, 1, 0], [0, 1, 0])


def test_scaling_by_two_zooms_out():
    image = np.zeros((1, 24, 24, 24), np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[10:14, 10:14, 10:14] = 1  # a cube of side 4 around the centre 12
    image[0][label > 0] = 1.0
    _, y1 = spatial_patch(image, label, (12, 12, 12), (12, 12, 12), np.eye(3))
    x2, y2 = spatial_patch(image, label, (12, 12, 12), (12, 12, 12), 2.0 * np.eye(3))
    assert int(y1.sum()) == 64
    assert int(y2.sum()) == 8  # side 2: the patch covers twice as much on each axis
    assert 6 <= float(x2.sum()) <= 10
    # Zooming in (0.5) shows the cube twice as large: side 8 fits in the patch.
    _, y_in = spatial_patch(image, label, (12, 12, 12), (12, 12, 12), 0.5 * np.eye(3))
    assert 300 <= int(y_in.sum()) <= 730


def test_the_pipeline_scales_by_the_drawn_factor_as_a_zoom_out():
    image = np.zeros((1, 24, 24, 24), np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    label[10:14, 10:14, 10:14] = 1
    config = replace(Augmentation.none(), p_scaling=1.0, scale_range=(2.0, 2.0))
    _, y = augment_patch(image, label, (12, 12, 12), (12, 12, 12), config, seeded_rng(0, 0, 0, 0))
    assert int(y.sum()) == 8


def test_noise_has_the_drawn_standard_deviation():
    image = np.zeros((2, 20, 20, 20), np.float32)
    out = gaussian_noise(image, np.random.default_rng(0), (0.05, 0.05))
    assert abs(float(out.std()) - 0.05) < 0.003
    assert abs(float(out.mean())) < 0.003
    out = gaussian_noise(image, np.random.default_rng(0), (0.5, 0.5))
    assert abs(float(out.std()) - 0.5) < 0.03


def test_blur_reduces_the_variance_of_a_random_image():
    image = _volume(1, (2, 16, 16, 16))
    out = gaussian_blur(image, np.random.default_rng(0), (0.8, 1.0), 1.0)
    assert (out.var(axis=(1, 2, 3)) < 0.5 * image.var(axis=(1, 2, 3))).all()
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=0.05)
    none = gaussian_blur(image, np.random.default_rng(0), (0.8, 1.0), 0.0)
    np.testing.assert_array_equal(none, image)


def test_brightness_multiplies_each_channel_by_one_factor_in_range():
    image = np.abs(_volume(2)) + 0.5
    out = brightness(image, np.random.default_rng(0), (0.75, 1.25))
    ratios = out / image
    for ch in range(image.shape[0]):
        np.testing.assert_allclose(ratios[ch], ratios[ch].flat[0], rtol=1e-5)
        assert 0.75 <= ratios[ch].flat[0] <= 1.25 and ratios[ch].flat[0] != 1.0


def test_contrast_keeps_the_mean_roughly_and_the_original_range():
    image = _volume(3)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(4):
        out = contrast(image, rng, (0.75, 1.25))
        for ch in range(image.shape[0]):
            assert out[ch].min() >= image[ch].min() and out[ch].max() <= image[ch].max()
            assert abs(float(out[ch].mean() - image[ch].mean())) < 0.05
        changed += not np.allclose(out, image)
    assert changed == 4
    # Factors at most 1 (nothing to clip): each channel's deviations from its mean are scaled
    # by one factor in the range.
    low = contrast(image, np.random.default_rng(1), (0.5, 0.9))
    for ch in range(image.shape[0]):
        dev, low_dev = image[ch] - image[ch].mean(), low[ch] - image[ch].mean()
        factor = float((low_dev * dev).sum() / (dev * dev).sum())
        assert 0.5 <= factor <= 1.0
        np.testing.assert_allclose(low_dev, factor * dev, atol=1e-5)


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_retains_mean_and_std_and_changes_values(invert):
    image = _volume(5) * 2 + 1
    out = gamma(image, np.random.default_rng(0), (1.5, 1.5), invert=invert)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), image.std(axis=(1, 2, 3)), rtol=1e-4)
    assert np.abs(out - image).max() > 0.1
    # Gamma > 1 bends values towards the minimum: the skew changes sign accordingly.
    skew = ((out - out.mean()) ** 3).mean()
    assert (skew > 0) if not invert else (skew < 0)


def test_gamma_inverted_is_gamma_of_the_negated_image():
    image = _volume(6)
    a = gamma(image, np.random.default_rng(9), (0.7, 1.5), invert=True)
    b = -gamma(-image, np.random.default_rng(9), (0.7, 1.5), invert=False)
    np.testing.assert_allclose(a, b, atol=1e-6)


def _brain(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored-looking two-channel image: a noisy ball of foreground, exactly 0 around it."""
    grid = np.indices((16, 16, 16)).astype(np.float32) - 7.5
    ball = (grid**2).sum(axis=0) < 7**2
    image = _volume(seed, (2, 16, 16, 16)) * 0.5 + 1.0
    image[:, ~ball] = 0
    return image, ball


@pytest.mark.parametrize("transform", ["histogram_shift", "bias_field"])
def test_site_transforms_keep_the_background_and_the_foregrounds_statistics(transform):
    image, ball = _brain(3)
    rng = np.random.default_rng(1)
    if transform == "histogram_shift":
        out = histogram_shift(image, rng, (5, 10))
    else:
        out = bias_field(image, rng, 0.4)
    assert not out[:, ~ball].any()  # the background stays 0, as z-scoring left it
    fg, before = out[:, ball], image[:, ball]
    np.testing.assert_allclose(fg.mean(axis=1), before.mean(axis=1), atol=1e-4)
    np.testing.assert_allclose(fg.std(axis=1), before.std(axis=1), rtol=1e-4)
    assert np.abs(fg - before).max() > 0.05


def test_histogram_shift_is_monotone_per_channel():
    image, ball = _brain(4)
    out = histogram_shift(image, np.random.default_rng(2), (8, 8))
    for ch in range(2):
        order = np.argsort(image[ch][ball], kind="stable")
        mapped = out[ch][ball][order]
        assert np.all(np.diff(mapped) >= -1e-5)  # the tissues' order is kept
        assert np.abs(np.corrcoef(mapped, image[ch][ball][order])[0, 1]) < 1 - 1e-4


def test_bias_field_is_a_smooth_multiplicative_shading():
    image, ball = _brain(5)
    image[:, ball] = 2.0
    image[:, 7, 7, 7] = 1.0  # the foreground's minimum stands in for the raw zero
    out = bias_field(image, np.random.default_rng(3), 0.4)
    for ch in range(2):
        low = out[ch, 7, 7, 7]
        field = np.where(ball, out[ch] - low, np.nan)
        field[7, 7, 7] = np.nan
        log_field = np.log(field)
        spread = np.nanstd(log_field)
        assert 0.05 < spread < 1.0
        steps = np.abs(np.diff(log_field, axis=0))
        assert np.nanmax(steps) < 0.25 * (np.nanmax(log_field) - np.nanmin(log_field))
    # A coefficient of 0 is no field at all.
    np.testing.assert_allclose(bias_field(image, np.random.default_rng(3), 0.0), image, atol=1e-5)


def test_the_bias_fields_polynomial_is_the_sum_of_its_terms_at_every_voxel():
    from brats.volume.intensity import _polynomial

    shape = (5, 4, 3)
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    powers = [[a**p for p in range(3)] for a in axes]
    terms = [(1, 0, 0), (0, 2, 0), (1, 0, 1), (0, 1, 1), (0, 0, 2), (2, 0, 0)]
    coefficients = np.asarray([0.3, -0.2, 0.1, 0.25, -0.4, 0.15], dtype=np.float32)
    z, y, x = np.meshgrid(*axes, indexing="ij")
    expected = sum(c * z**i * y**j * x**k for (i, j, k), c in zip(terms, coefficients, strict=True))
    np.testing.assert_allclose(_polynomial(powers, terms, coefficients), expected, atol=1e-6)


def test_site_transforms_run_last_and_leave_every_earlier_draw_alone():
    image, label = _volume(), _label()
    plain = augment_patch(image, label, (6, 6, 6), PATCH, Augmentation(), seeded_rng(1, 0, 0, 3))
    sites = replace(Augmentation(), p_histogram_shift=1.0, p_bias_field=1.0)
    shifted = augment_patch(image, label, (6, 6, 6), PATCH, sites, seeded_rng(1, 0, 0, 3))
    np.testing.assert_array_equal(plain[1], shifted[1])  # the same geometry and mirroring
    assert not np.array_equal(plain[0], shifted[0])
    assert Augmentation.sites().p_histogram_shift > 0 and Augmentation.sites().p_bias_field > 0


def test_low_resolution_keeps_shape_smooths_and_keeps_the_mean():
    image = _volume(7, (2, 24, 24, 24))
    out = low_resolution(image, np.random.default_rng(0), (0.5, 0.5), 1.0)
    assert out.shape == image.shape
    assert not np.allclose(out, image)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=0.12)

    def neighbour_corr(x):
        return float(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1])

    # Half the resolution: neighbours are strongly correlated, unlike the white-noise input.
    assert neighbour_corr(out) > 0.3 > abs(neighbour_corr(image))
    # Brought back linearly: the voxels are blends, not copies of input voxels.
    assert np.isin(out, image).mean() < 0.5
    # Zoom 1 is exact.
    same = low_resolution(image, np.random.default_rng(0), (1.0, 1.0), 1.0)
    np.testing.assert_allclose(same, image, atol=1e-6)


def test_mirror_on_axis_zero_is_np_flip_of_both():
    image, label = _volume(), _label()
    rng = np.random.default_rng(0)
    flipped = 0
    for _ in range(20):
        x, y = mirror(image, label, rng, (0,))
        if np.array_equal(x, np.flip(image, 1)):
            np.testing.assert_array_equal(y, np.flip(label, 0))
            flipped += 1
        else:
            np.testing.assert_array_equal(x, image)
            np.testing.assert_array_equal(y, label)
    assert 3 <= flipped <= 17  # each call flips with p = 0.5


def test_same_seeds_give_the_same_sample_and_another_sample_differs():
    image, label = _volume(), _label()
    config = _everything()
    a = augment_patch(image, label, (6, 6, 6), PATCH, config, seeded_rng(7, 2, 1, 5))
    b = augment_patch(image, label, (6, 6, 6), PATCH, config, seeded_rng(7, 2, 1, 5))
    c = augment_patch(image, label, (6, 6, 6), PATCH, config, seeded_rng(7, 2, 1, 6))
    d = augment_patch(image, label, (6, 6, 6), PATCH, config, seeded_rng(7, 3, 1, 5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], d[0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"p_rotation": 1.5},
        {"p_noise": -0.1},
        {"p_blur_per_channel": 2.0},
        {"max_rotation_deg": -1.0},
        {"scale_range": (1.4, 0.7)},
        {"scale_range": (0.0, 1.0)},
        {"noise_variance": (-0.1, 0.1)},
        {"brightness_range": (1.25, 0.75)},
        {"contrast_range": (0.0, 1.0)},
        {"low_res_zoom": (0.0, 1.0)},
        {"low_res_zoom": (0.5, 2.0)},
        {"gamma_range": (1.5, 0.7)},
        {"mirror_axes": (0, 3)},
        {"mirror_axes": (1, 1)},
        {"histogram_control_points": (2, 5)},
        {"histogram_control_points": (6, 5)},
        {"bias_coefficient": -0.1},
    ],
)
def test_invalid_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)


def test_bad_shapes_are_refused():
    image, label = _volume(), _label()
    rng = np.random.default_rng(0)
    config = Augmentation()
    with pytest.raises(ValueError, match="image"):
        augment_patch(image[0], label, (6, 6, 6), PATCH, config, rng)
    with pytest.raises(ValueError, match="label"):
        augment_patch(image, label[:-1], (6, 6, 6), PATCH, config, rng)
    with pytest.raises(ValueError, match="label"):
        augment_patch(image, label[None], (6, 6, 6), PATCH, config, rng)
    with pytest.raises(ValueError, match="patch_size"):
        augment_patch(image, label, (6, 6, 6), (8, 8), config, rng)
    with pytest.raises(ValueError, match="patch_size"):
        augment_patch(image, label, (6, 6, 6), (8, 0, 8), config, rng)
    with pytest.raises(ValueError, match="center"):
        augment_patch(image, label, (6, 6), PATCH, config, rng)
    with pytest.raises(ValueError, match="matrix"):
        spatial_patch(image, label, (6, 6, 6), PATCH, np.eye(2))
    with pytest.raises(ValueError, match="image"):
        gaussian_noise(image[0], rng, (0.0, 0.1))
    with pytest.raises(ValueError, match="label"):
        mirror(image, label[:, :, :-1], rng, (0,))
