"""Intensity normalization and the brain crop (brats.volume.normalize)."""

import numpy as np
import pytest

from brats.volume.geometry import CropBox
from brats.volume.normalize import brain_mask, minmax_scale, prepare_volume, zscore_nonzero


def test_zscore_over_brain_only():
    rng = np.random.default_rng(0)
    image = np.zeros((2, 6, 6, 6), np.float32)
    image[:, 1:5, 1:5, 1:5] = rng.normal(50, 10, size=(2, 4, 4, 4))
    out = zscore_nonzero(image)
    mask = brain_mask(image)
    assert out.dtype == np.float32
    for c in range(2):
        assert abs(out[c][mask].mean()) < 1e-5
        assert abs(out[c][mask].std() - 1) < 1e-4
    assert np.all(out[:, ~mask] == 0)


def test_zscore_constant_channel_and_empty_mask():
    image = np.zeros((1, 3, 3, 3), np.float32)
    image[0, 1, 1, 1] = 5
    assert np.all(zscore_nonzero(image) == 0)
    assert np.all(zscore_nonzero(np.zeros((1, 2, 2, 2))) == 0)


def test_minmax_is_whole_volume_not_per_slice():
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[0, :, :, 0] = 10  # slice 0 bright
    image[0, :, :, 1] = 5  # slice 1 half as bright: must stay half, not become 1
    # slice 2 stays 0: the background sets the minimum
    out = minmax_scale(image)
    assert out.max() == 1 and out[0, 0, 0, 1] == pytest.approx(0.5)
    assert np.all(minmax_scale(np.ones((1, 2, 2, 2))) == 0)


def test_prepare_volume_crops_to_the_brain_and_keeps_the_label():
    shape = (10, 10, 10)
    channels = []
    for i in range(3):
        v = np.zeros(shape, np.float32)
        v[2:8, 3:7, 1:9] = 10 * (i + 1) + np.arange(6 * 4 * 8).reshape(6, 4, 8)
        channels.append(v)
    label = np.zeros(shape, np.uint8)
    label[5, 5, 5] = 2
    label[9, 9, 9] = 1  # a labelled voxel outside the brain widens the box
    image, cropped, box = prepare_volume(channels, "zscore", label=label)
    assert box == CropBox((2, 3, 1), (10, 10, 10), shape)
    assert image.shape == (3, 8, 7, 9) and image.dtype == np.float16
    assert image.flags.c_contiguous and cropped is not None and cropped.flags.c_contiguous
    assert cropped[3, 2, 4] == 2 and cropped[7, 6, 8] == 1
    np.testing.assert_allclose(
        image[0].astype(np.float32)[: 6, : 4, : 8].mean(), 0.0, atol=1e-2
    )  # fmt: skip
    alone, none, brain = prepare_volume(channels, "minmax", dtype="float32")
    assert none is None and brain == CropBox((2, 3, 1), (8, 7, 9), shape)
    assert alone.dtype == np.float32 and alone.min() >= 0 and alone.max() == 1
    whole, _, everything = prepare_volume(channels, "zscore", crop_to_brain=False)
    assert whole.shape == (3, *shape) and everything.size == shape
    _, _, margin = prepare_volume(channels, "zscore", margin=2)
    assert margin == CropBox((0, 1, 0), (10, 9, 10), shape)
