"""Bounding boxes, crops and paste-back, centred pad/crop (brats.volume.geometry)."""

import numpy as np
import pytest

from brats.volume.geometry import CropBox, bounding_box, crop, pad_or_crop, paste_back


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
    with pytest.raises(ValueError, match=r"\(D, H, W\) mask"):
        bounding_box(np.zeros((2, 3), bool))
