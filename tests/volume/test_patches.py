"""Patch sampling: centres, extraction with padding, joint flips."""

from __future__ import annotations

import numpy as np

from brats.volume.patches import (
    extract,
    random_flip,
    sample_centers,
    sample_patches,
    to_channels_last,
)


def test_centers_hit_tumor_about_a_third_of_the_time():
    label = np.zeros((40, 40, 40), np.uint8)
    label[30:33, 5:8, 20:23] = 2
    rng = np.random.default_rng(0)
    centers = sample_centers(label, label.shape, (16, 16, 16), 3000, rng)
    on_tumor = label[tuple(centers.T)] > 0
    # 1/3 by design, plus the few uniform centres that land on 27 of 40^3 voxels.
    assert 0.30 < on_tumor.mean() < 0.37
    assert centers.min() >= 0 and (centers < 40).all()


def test_centers_without_label_are_uniform_where_the_patch_fits():
    rng = np.random.default_rng(1)
    centers = sample_centers(None, (40, 30, 10), (16, 16, 16), 500, rng)
    assert (centers[:, 0] >= 8).all() and (centers[:, 0] <= 32).all()
    assert (centers[:, 1] >= 8).all() and (centers[:, 1] <= 22).all()
    # An axis shorter than the patch: the centre of the volume.
    assert (centers[:, 2] == 5).all()


def test_extract_pads_past_the_edge_and_keeps_values():
    vol = np.arange(2 * 6 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 6) + 1
    patch = extract(vol, (0, 3, 5), (4, 4, 4))
    assert patch.shape == (2, 4, 4, 4)
    # Rows before index 0 and past index 5 are padding.
    assert (patch[:, :2] == 0).all() and (patch[:, :, :, 3:] == 0).all()
    np.testing.assert_array_equal(patch[:, 2:, :, :3], vol[:, 0:2, 1:5, 3:6])


def test_flip_keeps_image_and_label_aligned():
    rng = np.random.default_rng(3)
    label = rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)
    image = np.stack([label.astype(np.float32), -label.astype(np.float32)])
    for _ in range(10):
        x, y = random_flip(image, label, rng)
        np.testing.assert_array_equal(x[0], y)
        np.testing.assert_array_equal(x[1], -y.astype(np.float32))


def test_sample_patches_shapes_dtypes_and_seeding():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    image = np.random.default_rng(0).normal(size=(4, 20, 24, 28)).astype(np.float16)
    label = np.zeros((20, 24, 28), np.uint8)
    label[10, 12, 14] = 3
    a = sample_patches(image, label, (16, 16, 16), 5, rng_a)
    b = sample_patches(image, label, (16, 16, 16), 5, rng_b)
    assert len(a) == 5
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.shape == (4, 16, 16, 16) and xa.dtype == np.float32
        assert ya.shape == (16, 16, 16) and ya.dtype == np.uint8
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert to_channels_last(a[0][0]).shape == (16, 16, 16, 4)
