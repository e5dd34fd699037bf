"""Patch sampling: centres (tumor-uniform and class-balanced), extraction with padding."""

from __future__ import annotations

import numpy as np

from brats.volume.patches import (
    extract,
    sample_centers,
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


def test_class_balanced_centres_see_a_small_core_as_often_as_the_edema():
    label = np.zeros((40, 40, 40), np.uint8)
    label[5:35, 5:35, 5:35] = 2  # a large edema
    label[18:20, 18:20, 18:20] = 1  # an 8-voxel core
    label[25:27, 25:27, 25:27] = 3  # an 8-voxel enhancing part
    centre_classes = {}
    for balance in (False, True):
        rng = np.random.default_rng(0)
        centers = sample_centers(
            label, label.shape, (8, 8, 8), 3000, rng, tumor_fraction=1.0, balance_classes=balance
        )
        values = label[tuple(centers.T)]
        centre_classes[balance] = [float(np.mean(values == c)) for c in (1, 2, 3)]
    # Voxel-uniform: the 8-voxel classes are 8 of ~27000 tumor voxels.
    assert max(centre_classes[False][0], centre_classes[False][2]) < 0.01
    # Class-balanced: each present class a third of the time.
    for share in centre_classes[True]:
        assert abs(share - 1 / 3) < 0.04


def test_class_balanced_centres_draw_only_classes_present():
    label = np.zeros((20, 20, 20), np.uint8)
    label[5:9, 5:9, 5:9] = 2
    centers = sample_centers(
        label, label.shape, (8, 8, 8), 200, np.random.default_rng(1),
        tumor_fraction=1.0, balance_classes=True,
    )  # fmt: skip
    assert (label[tuple(centers.T)] == 2).all()


def test_to_channels_last():
    image = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    moved = to_channels_last(image)
    assert moved.shape == (3, 4, 5, 2)
    np.testing.assert_array_equal(moved[..., 1], image[1])
