"""What a training run is told (brats.train.config)."""

from __future__ import annotations

import pytest

from brats.train.config import TrainConfig
from brats.volume.labels import BRATS2023, GLI2024


def test_config_refuses_patches_the_network_cannot_take():
    with pytest.raises(ValueError, match="divisible"):
        TrainConfig(data="d", storage="s", patch_size=(16, 16, 10), depth=2)
    with pytest.raises(ValueError, match="unknown loss"):
        TrainConfig(data="d", storage="s", loss="mse")
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        TrainConfig(data="d", storage="s", lr_schedule="step")
    # Below 0 takes privileges a worker process lacks; above 19 is no niceness.
    for niceness in (-1, 20):
        with pytest.raises(ValueError, match=r"worker_niceness must be in 0\.\.19"):
            TrainConfig(data="d", storage="s", worker_niceness=niceness)


def test_the_config_round_trips_and_describes_its_model():
    config = TrainConfig(
        data="d", storage="s3://b/runs", name="r1", s3_endpoint="http://x", depth=3
    )
    assert TrainConfig.from_dict({**config.to_dict(), "from_a_newer_job": 1}) == config
    info = config.model_info("zscore", label_scheme=BRATS2023, checkpoint="checkpoint_7")
    assert info.unet == config.unet() and info.unet.in_channels == 4
    gli = config.model_info("zscore", label_scheme=GLI2024)
    assert (gli.unet.n_classes, gli.unet.n_regions, gli.unet.n_outputs) == (5, 4, 4)
    assert gli.scheme is GLI2024
    assert info.patch_size == config.patch_size and info.modalities == config.modalities
    assert info.training["checkpoint"] == "checkpoint_7"
    assert not {"s3_endpoint", "wait_for_actors"} & set(info.training)  # runtime-only
    assert info.training["name"] == "r1"
    assert config.run.uri == "s3://b/runs/r1"


def test_presets_fill_in_the_recipe_and_the_flags_override_it():
    nnunet = TrainConfig(data="d", storage="s", depth=3)
    assert (nnunet.preset, nnunet.loss, nnunet.normalization, nnunet.augmentation) == (
        "nnunet",
        "dice_bce",
        "instance",
        "sites",
    )
    unet = nnunet.unet()
    assert (unet.output, unet.activation, unet.deep_supervision) == ("regions", "leaky_relu", 1)
    assert nnunet.balance_classes and nnunet.augment().p_rotation > 0
    seed = TrainConfig(data="d", storage="s", preset="seed")
    assert (seed.loss, seed.normalization, seed.augmentation) == ("dice_ce", None, "flips")
    seed_unet = seed.unet()
    assert (seed_unet.output, seed_unet.activation, seed_unet.deep_supervision) == (
        "softmax",
        "relu",
        0,
    )
    assert seed_unet.level_dropout[0] > 0 and not seed.balance_classes
    assert seed.augment().p_rotation == 0 and seed.augment().mirror_axes == (0, 1, 2)
    custom = TrainConfig(data="d", storage="s", preset="seed", loss="cce", normalization="batch")
    assert custom.unet().normalization == "batch" and custom.loss == "cce"
    assert TrainConfig(data="d", storage="s", augmentation="none").augment().mirror_axes == ()
    sites = nnunet.augment()
    assert sites.p_histogram_shift > 0 and sites.p_bias_field > 0 and sites.p_rotation > 0
    plain = TrainConfig(data="d", storage="s", augmentation="nnunet").augment()
    assert plain.p_bias_field == 0 and plain.p_histogram_shift == 0  # nnU-Net's own kinds
    # nnU-Net predicts with mirroring; the tutorial did not.
    assert nnunet.model_info("zscore").tta and not seed.model_info("zscore").tta
    # A stored config is complete: it reads back to the same recipe.
    assert TrainConfig.from_dict(seed.to_dict()) == seed


def test_a_loss_must_fit_the_presets_outputs():
    with pytest.raises(ValueError, match="does not fit the nnunet preset"):
        TrainConfig(data="d", storage="s", loss="dice_ce")
    with pytest.raises(ValueError, match="does not fit the seed preset"):
        TrainConfig(data="d", storage="s", preset="seed", loss="dice_bce")
    with pytest.raises(ValueError, match="unknown preset"):
        TrainConfig(data="d", storage="s", preset="monai")


def test_a_cohort_stored_at_another_spacing_than_asked_is_refused(tmp_path):
    """``--target-spacing`` on an ingested cohort must be the spacing it is stored at (a
    cohort is resampled when it is ingested); a manifest of before, whose cases share one
    spacing, is stored at that one; one whose cases differ says none."""
    import dataclasses
    import json

    from brats.ingest.shards import MANIFEST, MANIFEST_FORMAT, manifest_target_spacing
    from brats.train.config import TrainingError
    from brats.train.job import prepare_cohort

    stored = {"format": MANIFEST_FORMAT, "spacing": {"target": [1.0, 1.0, 1.0]}, "cases": []}
    (tmp_path / MANIFEST).write_text(json.dumps(stored))
    asked = TrainConfig(
        data=str(tmp_path), storage=str(tmp_path / "runs"), target_spacing=(1, 1, 1)
    )
    assert prepare_cohort(asked).path == str(tmp_path)
    other = dataclasses.replace(asked, target_spacing=(1.0, 1.0, 3.0))
    with pytest.raises(TrainingError, match=r"stored at spacing \[1.0, 1.0, 1.0\] mm, not the"):
        prepare_cohort(other)
    older = {"cases": [{"spacing": [2.0, 2.0, 2.0]}, {"spacing": [2.0, 2.0, 2.0]}]}
    assert manifest_target_spacing(older) == (2.0, 2.0, 2.0)
    assert (
        manifest_target_spacing({"cases": [{"spacing": [2, 2, 2]}, {"spacing": [1, 1, 1]}]}) is None
    )
    with pytest.raises(ValueError, match="three positive"):
        TrainConfig(data="d", storage="s", target_spacing=(1.0, 0.0, 1.0))
