import numpy as np
import pytest

from brats.labels import LabelConvention
from brats.nifti import CaseVolumes
from brats.preprocess import (
    CropBox,
    PreprocessConfig,
    bounding_box,
    brain_mask,
    crop,
    minmax_scale,
    pad_or_crop,
    paste_back,
    prepare_case,
    zscore_nonzero,
)


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


def test_bounding_box_crop_and_paste_back_round_trip():
    mask = np.zeros((10, 12, 14), bool)
    mask[2:5, 3:9, 4:5] = True
    box = bounding_box(mask)
    assert box == CropBox((2, 3, 4), (5, 9, 5), (10, 12, 14))
    vol = np.random.default_rng(0).random((2, 10, 12, 14)).astype(np.float32)
    cropped = crop(vol, box)
    assert cropped.shape == (2, 3, 6, 1)
    back = paste_back(cropped, box)
    np.testing.assert_array_equal(back[(..., *box.slices)], cropped)
    assert back.shape == vol.shape and np.all(back[:, :2] == 0)
    grown = bounding_box(mask, margin=3)
    assert grown.start == (0, 0, 1) and grown.stop == (8, 12, 8)
    assert bounding_box(np.zeros((2, 3, 4), bool)) == CropBox((0, 0, 0), (2, 3, 4), (2, 3, 4))
    with pytest.raises(ValueError, match="does not fit"):
        paste_back(np.zeros((2, 2, 2)), box)


def test_pad_or_crop_is_centred_and_self_inverse_for_padding():
    vol = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    out = pad_or_crop(vol, (8, 4, 7))
    assert out.shape == (8, 4, 7)
    np.testing.assert_array_equal(out[1:6], vol[:, 1:5])
    assert np.all(out[0] == 0)
    padded = pad_or_crop(vol, (9, 10, 11))
    np.testing.assert_array_equal(pad_or_crop(padded, vol.shape), vol)
    two = pad_or_crop(np.ones((2, 3, 3, 3)), (4, 4, 4))
    assert two.shape == (2, 4, 4, 4)


def test_prepare_case_crops_normalizes_and_orders_channels():
    shape = (10, 10, 10)
    images = {}
    for i, m in enumerate(("flair", "t1", "t1ce", "t2")):
        v = np.zeros(shape, np.float32)
        v[2:8, 3:7, 1:9] = 100 * (i + 1) + np.arange(6 * 4 * 8).reshape(6, 4, 8)
        images[m] = v
    label = np.zeros(shape, np.uint8)
    label[4, 4, 4] = 3
    vols = CaseVolumes(
        "c", images, label, np.eye(4), (1.0, 1.0, 1.0), LabelConvention.BRATS2020, header=None
    )
    prep = prepare_case(vols, PreprocessConfig(modalities=("t2", "flair", "t1ce")))
    assert prep.image.shape == (3, 6, 4, 8) and prep.image.dtype == np.float16
    assert prep.crop == CropBox((2, 3, 1), (8, 7, 9), shape)
    assert prep.label.shape == (6, 4, 8) and prep.label[2, 1, 3] == 3
    full = prepare_case(vols, PreprocessConfig(crop_to_brain=False, dtype="float32"))
    assert full.image.shape == (4, 10, 10, 10) and full.image.dtype == np.float32
    with pytest.raises(ValueError):
        PreprocessConfig(modalities=("flair", "flair"))
    with pytest.raises(ValueError):
        PreprocessConfig(modalities=("pd",))
