"""Small-ET relabeling and region volumes (brats.volume.postprocess)."""

import numpy as np
import pytest

from brats.volume.labels import ED, ET, NCR
from brats.volume.postprocess import region_volumes_ml, small_et_to_necrosis


def test_small_enhancing_components_become_necrosis():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = ET  # 216 voxels: kept
    labels[15, 15, 15] = ET  # a speck: necrosis
    labels[12:14, 2:4, 2:4] = ED
    out = small_et_to_necrosis(labels, 10)
    assert out[15, 15, 15] == NCR and (out[2:8, 2:8, 2:8] == ET).all()
    assert (out[12:14, 2:4, 2:4] == ED).all()
    assert labels[15, 15, 15] == ET  # the input is left as it was
    np.testing.assert_array_equal(small_et_to_necrosis(labels, 0), labels)
    diagonal = np.zeros((4, 4, 4), np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = ET  # not face-connected: two specks
    assert not (small_et_to_necrosis(diagonal, 2) == ET).any()


def test_region_volumes_in_ml():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels.flat[:10] = NCR
    labels.flat[10:30] = ED
    labels.flat[30:35] = ET
    volumes = region_volumes_ml(labels, (1.0, 2.0, 0.5))  # 1 mm^3 voxels
    assert volumes == pytest.approx({"WT": 0.035, "TC": 0.015, "ET": 0.005})
    assert region_volumes_ml(labels, (2.0, 2.0, 2.0))["WT"] == pytest.approx(0.28)
    assert region_volumes_ml(np.zeros((3, 3, 3), np.uint8), (1, 1, 1)) == {
        "WT": 0.0,
        "TC": 0.0,
        "ET": 0.0,
    }
