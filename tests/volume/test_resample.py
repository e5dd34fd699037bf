"""Voxel spacing (brats.volume.resample): nnU-Net's target spacing, and resampling there and
back over the same field of view."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from brats.volume.resample import (
    as_spacing,
    resample_image,
    resample_labels,
    resample_probabilities,
    resampled_shape,
    same_spacing,
    separate_axis,
    target_spacing,
)


def test_the_target_is_the_median_spacing_of_an_isotropic_cohort():
    spacings = [(1.0, 1.0, 1.0), (0.9, 0.9, 1.2), (1.2, 1.1, 1.0), (1.0, 1.0, 3.0)]
    shapes = [(240, 240, 155)] * 4
    assert target_spacing(spacings, shapes) == pytest.approx((1.0, 1.0, 1.1))


def test_an_anisotropic_cohort_takes_the_10th_percentile_of_its_slice_spacing():
    """Median (0.5, 0.5, 5) with a third of the in-plane voxels along z: the slice axis takes
    the 10th percentile of the cases' slice spacings (nnU-Net's rule)."""
    spacings = [(0.5, 0.5, 5.0), (0.5, 0.5, 5.0), (0.5, 0.5, 6.0), (0.5, 0.5, 3.0)] * 3
    shapes = [(480, 480, 30)] * 12
    z = np.percentile([5.0, 5.0, 6.0, 3.0] * 3, 10)
    assert target_spacing(spacings, shapes) == pytest.approx((0.5, 0.5, z))
    # As many voxels along z as in plane: not anisotropic in voxels, the median stays.
    assert target_spacing(spacings, [(480, 480, 400)] * 12)[2] == pytest.approx(5.0)
    # The percentile is never finer than the other axes.
    fine = [(1.0, 1.0, 5.0)] * 9 + [(1.0, 1.0, 0.5)] * 3
    assert target_spacing(fine, [(240, 240, 30)] * 12)[2] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "bad", [(), (1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("nan"), 1.0)]
)
def test_a_spacing_is_three_positive_finite_sizes(bad):
    with pytest.raises(ValueError, match="three positive"):
        as_spacing(bad)
    with pytest.raises(ValueError, match="one per case"):
        target_spacing([], [])


def test_shapes_cover_the_same_field_of_view_and_thick_slices_go_their_own_way():
    assert resampled_shape((240, 240, 155), (1, 1, 1), (1, 1, 5)) == (240, 240, 31)
    assert resampled_shape((480, 480, 31), (0.5, 0.5, 5), (1, 1, 1)) == (240, 240, 155)
    assert resampled_shape((3, 3, 3), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)
    assert separate_axis((1, 1, 1), (1, 1, 1)) is None
    assert separate_axis((1, 1, 5), (1, 1, 1)) == 2  # the case's thick slices
    assert separate_axis((1, 1, 1), (4, 1, 1)) == 0  # the target's
    assert separate_axis((1, 1, 3), (1, 1, 1)) is None  # 3x is not more than 3x
    assert separate_axis((4, 4, 1), (1, 1, 1)) is None  # two coarse axes: no slice axis
    assert same_spacing((1.0, 1.0, 3.0), (1.0002, 1.0, 2.9995))
    assert not same_spacing((1.0, 1.0, 3.0), (1.0, 1.0, 3.01))


def _labels() -> np.ndarray:
    """A nested tumour (classes 1 around 3, in 2) on a 1 mm grid, with room around it."""
    grid = np.indices((48, 44, 40)).astype(np.float64)
    centre = np.array([24.0, 21.0, 19.0])[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2 * np.array([1.0, 1.2, 0.8])[:, None, None, None]).sum(0))
    labels = np.zeros(grid.shape[1:], np.uint8)
    labels[r < 15] = 2
    labels[r < 9] = 1
    labels[r < 5] = 3
    return labels


@pytest.mark.parametrize(
    ("coarse", "axis"),
    [
        ((1.0, 1.0, 3.0), None),
        ((1.0, 1.0, 5.0), 2),
        ((2.0, 2.0, 2.0), None),
        ((0.5, 0.5, 1.0), None),
    ],
)
def test_labels_there_and_back_keep_every_region_within_a_voxel(coarse, axis):
    """1 mm -> ``coarse`` -> 1 mm: a voxel whose region changed lies within one coarse voxel
    (its diagonal) of that region's boundary; going finer and back changes nothing."""
    labels = _labels()
    spacing = (1.0, 1.0, 1.0)
    there = resampled_shape(labels.shape, spacing, coarse)
    assert separate_axis(spacing, coarse) == axis
    down = resample_labels(labels, there, axis)
    assert down.shape == there and down.dtype == np.uint8
    back = resample_labels(down, labels.shape, axis)
    reach = float(np.linalg.norm(coarse))
    for region in ({1, 2, 3}, {1, 3}, {3}):
        truth = np.isin(labels, list(region))
        again = np.isin(back, list(region))
        changed = truth != again
        inside = ndimage.distance_transform_edt(truth)
        outside = ndimage.distance_transform_edt(~truth)
        to_boundary = np.where(truth, inside, outside)
        assert changed.any() or coarse == (0.5, 0.5, 1.0)
        assert not changed.any() or to_boundary[changed].max() <= reach, region
        assert set(np.unique(back)) <= {0, 1, 2, 3}


def test_images_keep_their_world_positions():
    """A ramp along each axis, in mm from the field of view's edge: resampled to another
    spacing, each voxel holds its own centre's position (cells, not corners, line up)."""
    shape, spacing, target = (30, 24, 20), (1.0, 1.0, 1.5), (2.0, 1.5, 3.0)
    ramps = np.stack([(np.indices(shape)[a] + 0.5) * spacing[a] for a in range(3)]).astype(
        np.float32
    )
    there = resampled_shape(shape, spacing, target)
    for order in (1, 3):
        out = resample_image(ramps, there, None, order=order)
        assert out.shape == (3, *there) and out.dtype == np.float32
        for a in range(3):
            step = shape[a] * spacing[a] / there[a]
            centres = (np.indices(there)[a] + 0.5) * step
            # Splines meet the edge's boundary condition within two voxels of it.
            inner = tuple(slice(order - 1, -order + 1 or None) for _ in range(3))
            np.testing.assert_allclose(out[a][inner], centres[inner], atol=0.005)


def test_thick_slices_are_not_smeared_into_each_other():
    """Along a separate slice axis each output slice is one of the input's (nearest
    neighbour), while the plane is interpolated."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=(2, 16, 16, 6)).astype(np.float32)
    out = resample_image(image, (32, 32, 12), 2)
    halved = resample_image(out, (16, 16, 6), 2)
    # Slice k of the fine grid lies in thick slice k // 2 and is that slice, interpolated.
    for k in range(12):
        plane = resample_image(image[:, :, :, k // 2 : k // 2 + 1], (32, 32, 1), None)
        np.testing.assert_allclose(out[..., k], plane[..., 0], atol=1e-5)
    assert halved.shape == image.shape


def test_probabilities_stay_probabilities_and_the_same_grid_is_a_copy():
    rng = np.random.default_rng(0)
    p = rng.random((3, 10, 12, 8)).astype(np.float32)
    out = resample_probabilities(p, (21, 25, 16), None)
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.shape == (3, 21, 25, 16)
    same = resample_probabilities(p, p.shape[1:], None)
    np.testing.assert_array_equal(same, p)
    assert same is not p


@pytest.mark.parametrize("order", [1, 3])
def test_resampling_is_scipys_zoom_over_the_same_extent(order):
    """Axis by axis, as small matrices: the values scipy's ``zoom(grid_mode=True)`` gives
    (linear everywhere; cubic splines two voxels in from the edge, where the two extend the
    volume alike), up- and downsampling at once."""
    rng = np.random.default_rng(order)
    volume = rng.random((21, 17, 12)).astype(np.float32)
    shape = (14, 30, 12)
    ours = resample_image(volume, shape, None, order=order)
    factors = [n / o for n, o in zip(shape, volume.shape, strict=True)]
    theirs = ndimage.zoom(volume, factors, order=order, mode="nearest", grid_mode=True)
    inner = (slice(2, -2), slice(4, -4), slice(None)) if order == 3 else (slice(None),) * 3
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=2e-3 if order == 3 else 1e-5)
