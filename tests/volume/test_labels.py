import numpy as np
import pytest

from brats.volume.labels import (
    ED,
    ET,
    NCR,
    REGIONS,
    LabelConvention,
    LabelError,
    one_hot,
    region_mask,
    regions_to_labels,
    to_disk,
    to_internal,
)


def test_2020_and_2023_map_to_the_same_internal_classes():
    disk2020 = np.array([0, 1, 2, 4, 4, 0], dtype=np.uint8)
    disk2023 = np.array([0, 1, 2, 3, 3, 0], dtype=np.uint8)
    expected = np.array([0, 1, 2, 3, 3, 0], dtype=np.uint8)
    np.testing.assert_array_equal(to_internal(disk2020, "brats2020"), expected)
    np.testing.assert_array_equal(to_internal(disk2023, LabelConvention.BRATS2023), expected)


def test_round_trip_to_disk():
    internal = np.arange(4, dtype=np.uint8).repeat(3).reshape(3, 4)
    for conv in LabelConvention:
        np.testing.assert_array_equal(to_internal(to_disk(internal, conv), conv), internal)
    assert set(np.unique(to_disk(internal, "brats2020"))) == {0, 1, 2, 4}


@pytest.mark.parametrize(
    ("seg", "conv"),
    [([0, 3], "brats2020"), ([0, 4], "brats2023"), ([0, 5], "brats2020"), ([0, 7], "brats2023")],
)
def test_stray_label_is_an_error(seg, conv):
    with pytest.raises(LabelError, match=r"not in the brats20\d\d convention"):
        to_internal(np.array(seg, dtype=np.int16), conv)


def test_float_labels_must_be_whole_numbers():
    np.testing.assert_array_equal(to_internal(np.array([0.0, 4.0]), "brats2020"), [0, 3])
    with pytest.raises(LabelError, match="non-integer"):
        to_internal(np.array([0.0, 1.5]), "brats2020")
    with pytest.raises(LabelError, match="non-integer"):
        to_internal(np.array([0.0, np.nan]), "brats2020")
    with pytest.raises(LabelError, match="outside"):
        to_internal(np.array([0, -1]), "brats2020")


def test_regions_nest():
    labels = np.array([0, 1, 2, 3])
    masks = {region: region_mask(labels, region) for region in REGIONS}
    np.testing.assert_array_equal(masks["WT"], [False, True, True, True])
    np.testing.assert_array_equal(masks["TC"], [False, True, False, True])
    np.testing.assert_array_equal(masks["ET"], [False, False, False, True])
    with pytest.raises(ValueError, match="unknown region"):
        region_mask(labels, "XX")


def test_one_hot_channels_last():
    oh = one_hot(np.array([[0, 3], [1, 2]]))
    assert oh.shape == (2, 2, 4) and oh.dtype == np.float32
    np.testing.assert_array_equal(oh.sum(-1), 1)
    assert oh[0, 1, 3] == 1 and oh[1, 0, 1] == 1


def test_regions_decode_the_way_nnunet_decodes_brats():
    # Voxels: background, edema only, TC without ET, ET (with TC and WT), ET alone.
    wt = np.array([0.2, 0.9, 0.9, 0.9, 0.1])
    tc = np.array([0.1, 0.3, 0.8, 0.9, 0.2])
    et = np.array([0.0, 0.1, 0.4, 0.7, 0.6])
    labels = regions_to_labels(np.stack([wt, tc, et]))
    np.testing.assert_array_equal(labels, [0, ED, NCR, ET, ET])
    assert labels.dtype == np.uint8
    # Decoding a label volume's own regions gives it back.
    truth = np.random.default_rng(0).integers(0, 4, (5, 6, 7)).astype(np.uint8)
    regions = np.stack([region_mask(truth, r) for r in REGIONS]).astype(np.float32)
    np.testing.assert_array_equal(regions_to_labels(regions), truth)
    with pytest.raises(ValueError, match="3 region channels"):
        regions_to_labels(np.zeros((4, 2, 2, 2)))
