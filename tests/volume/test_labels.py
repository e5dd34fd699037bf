import numpy as np
import pytest

from brats.volume.labels import (
    ED,
    ET,
    NCR,
    REGIONS,
    SCHEMES,
    LabelError,
    interchangeable,
    one_hot,
    region_mask,
    regions_to_labels,
    scheme_from_dict,
    scheme_named,
    to_disk,
    to_internal,
)


def test_2020_and_2023_map_to_the_same_internal_classes():
    disk2020 = np.array([0, 1, 2, 4, 4, 0], dtype=np.uint8)
    disk2023 = np.array([0, 1, 2, 3, 3, 0], dtype=np.uint8)
    expected = np.array([0, 1, 2, 3, 3, 0], dtype=np.uint8)
    np.testing.assert_array_equal(to_internal(disk2020, "brats2020"), expected)
    np.testing.assert_array_equal(to_internal(disk2023, "brats2023"), expected)


def test_round_trip_to_disk():
    internal = np.arange(4, dtype=np.uint8).repeat(3).reshape(3, 4)
    for conv in ("brats2020", "brats2023"):
        np.testing.assert_array_equal(to_internal(to_disk(internal, conv), conv), internal)
    assert set(np.unique(to_disk(internal, "brats2020"))) == {0, 1, 2, 4}


@pytest.mark.parametrize(
    ("seg", "conv"),
    [([0, 3], "brats2020"), ([0, 4], "brats2023"), ([0, 5], "brats2020"), ([0, 7], "brats2023")],
)
def test_stray_label_is_an_error(seg, conv):
    with pytest.raises(LabelError, match=r"not in the brats20\d\d scheme"):
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


# --- label schemes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEMES))
def test_disk_to_internal_to_disk_is_the_identity_for_every_scheme(name):
    scheme = SCHEMES[name]
    rng = np.random.default_rng(len(name))
    disk = rng.choice(np.asarray(scheme.disk_values, np.uint8), size=(6, 7, 8))
    internal = to_internal(disk, scheme)
    assert internal.max() < scheme.n_classes
    np.testing.assert_array_equal(to_disk(internal, scheme), disk)
    assert scheme_from_dict(scheme.to_dict()) == scheme


@pytest.mark.parametrize("name", list(SCHEMES))
def test_decoding_a_schemes_own_region_outputs_gives_its_labels_back(name):
    scheme = SCHEMES[name]
    truth = np.random.default_rng(1).integers(0, scheme.n_classes, (5, 6, 7)).astype(np.uint8)
    outputs = np.stack([region_mask(truth, r, scheme) for r in scheme.output_regions])
    np.testing.assert_array_equal(
        regions_to_labels(outputs.astype(np.float32), scheme=scheme), truth
    )


_DISK = np.array([0, 1, 2, 3, 4], np.uint8)
_REFERENCE_2024 = {
    # get_TissueWiseSeg of metrics_GLI.py and metrics_PED.py, region by region, on disk values.
    "gli2024": {
        "WT": (_DISK >= 1) & (_DISK <= 3),
        "TC": (_DISK == 1) | (_DISK == 3),
        "ET": _DISK == 3,
        "NETC": _DISK == 1,
        "SNFH": _DISK == 2,
        "RC": _DISK == 4,
    },
    "ped2024": {
        "WT": (_DISK >= 1) & (_DISK <= 4),
        "TC": (_DISK >= 1) & (_DISK <= 3),
        "ET": _DISK == 1,
        "NETC": _DISK == 2,
        "CC": _DISK == 3,
        "ED": _DISK == 4,
    },
}


@pytest.mark.parametrize("name", sorted(_REFERENCE_2024))
def test_the_2024_schemes_read_the_challenge_values(name):
    """Regions as the BraTS 2024 evaluation code (rachitsaluja/BraTS-2024-Metrics) builds them
    from the labels on disk, in the order the issue lists them."""
    scheme, reference = scheme_named(name), _REFERENCE_2024[name]
    assert list(scheme.regions) == list(reference)
    for region, expected in reference.items():
        got = region_mask(to_internal(_DISK, scheme), region, scheme)
        np.testing.assert_array_equal(got, expected, err_msg=region)


def test_meningioma_radiotherapy_has_one_target_on_t1c_alone():
    menrt = scheme_named("menrt2024")
    assert menrt.images == ("t1ce",) and menrt.truth == "gtv" and list(menrt.regions) == ["GTV"]


def test_a_cavity_under_gli2024_is_never_enhancing_tumour():
    # The post-treatment case the issue found scored as a perfect ET: cavity and edema only.
    disk = np.array([0, 2, 4, 4], np.uint8)
    labels = to_internal(disk, "gli2024")
    assert not region_mask(labels, "ET", "gli2024").any()
    np.testing.assert_array_equal(region_mask(labels, "RC", "gli2024"), [0, 0, 1, 1])
    with pytest.raises(LabelError, match="brats2023"):
        to_internal(disk, "brats2023")


def test_only_schemes_whose_classes_mean_the_same_are_interchangeable():
    assert interchangeable(SCHEMES["brats2020"], SCHEMES["brats2023"])
    for name in ("met2023", "men2023"):  # the 2023 labels, other lesion-wise settings
        assert interchangeable(SCHEMES["brats2023"], SCHEMES[name])
        assert interchangeable(SCHEMES[name], SCHEMES["brats2020"])
        assert SCHEMES[name].disk_values == SCHEMES["brats2023"].disk_values
        assert SCHEMES[name].images == SCHEMES["brats2023"].images
    assert (SCHEMES["met2023"].lesion_task, SCHEMES["men2023"].lesion_task) == (
        "metastasis",
        "meningioma",
    )
    assert not interchangeable(SCHEMES["brats2023"], SCHEMES["gli2024"])
    assert not interchangeable(SCHEMES["gli2024"], SCHEMES["ped2024"])


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_a_scheme_stored_with_sorted_keys_keeps_its_region_order(name):
    """model.json and manifests are written with sorted keys; the first region ranks a
    report's cases, so WT must stay first."""
    import json

    stored = json.loads(json.dumps(SCHEMES[name].to_dict(), sort_keys=True))
    assert list(stored["regions"]) == sorted(SCHEMES[name].regions)
    assert scheme_from_dict(stored) is SCHEMES[name]
    del stored["region_order"]  # a model.json from before the order was kept
    assert scheme_from_dict(stored) is SCHEMES[name]
    user = dict(stored, name="mine", region_order=list(reversed(SCHEMES[name].regions)))
    assert list(scheme_from_dict(user).regions) == list(reversed(SCHEMES[name].regions))
    with pytest.raises(ValueError, match="does not list the regions"):
        scheme_from_dict(dict(user, region_order=list(SCHEMES[name].regions)[1:]))
