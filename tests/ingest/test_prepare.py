"""A validated case becomes network input (brats.ingest.prepare)."""

import numpy as np
import pytest

from brats.ingest.prepare import PreprocessConfig, prepare_case
from brats.io.model_card import SEED_INFO
from brats.io.nifti import CaseVolumes, Limits
from brats.volume.geometry import CropBox
from brats.volume.labels import BRATS2020
from brats.volume.normalize import Normalization


def test_prepare_case_crops_normalizes_and_orders_channels():
    shape = (10, 10, 10)
    images = {}
    for i, m in enumerate(("flair", "t1", "t1ce", "t2")):
        v = np.zeros(shape, np.float32)
        v[2:8, 3:7, 1:9] = 100 * (i + 1) + np.arange(6 * 4 * 8).reshape(6, 4, 8)
        images[m] = v
    label = np.zeros(shape, np.uint8)
    label[4, 4, 4] = 3
    vols = CaseVolumes("c", images, label, np.eye(4), (1.0, 1.0, 1.0), BRATS2020, header=None)
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


def test_preparation_for_a_model_follows_its_card():
    config = PreprocessConfig.for_model(SEED_INFO, limits=Limits(max_bytes=1 << 20))
    assert config.modalities == ("flair", "t1ce", "t2")
    assert config.normalization is Normalization.MINMAX
    assert config.limits.max_bytes == 1 << 20 and config.dtype == "float16"
