"""What a training run is told (brats.train.config)."""

from __future__ import annotations

import pytest

from brats.train.config import TrainConfig


def test_config_refuses_patches_the_network_cannot_take():
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(data="d", storage="s", patch_size=(16, 16, 10), depth=2)
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(data="d", storage="s", loss="mse")
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        TrainConfig(data="d", storage="s", lr_schedule="step")


def test_the_config_round_trips_and_describes_its_model():
    config = TrainConfig(
        data="d", storage="s3://b/runs", name="r1", s3_endpoint="http://x", depth=3
    )
    assert TrainConfig.from_dict({**config.to_dict(), "from_a_newer_job": 1}) == config
    info = config.model_info("zscore", label_convention="brats2023", checkpoint="checkpoint_7")
    assert info.unet == config.unet() and info.unet.in_channels == 4
    assert info.patch_size == config.patch_size and info.modalities == config.modalities
    assert info.training["checkpoint"] == "checkpoint_7"
    assert "s3_endpoint" not in info.training and info.training["name"] == "r1"
    assert config.run.uri == "s3://b/runs/r1"
