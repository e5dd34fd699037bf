"""A finished run is recognised as finished after its config changed but its best
checkpoint did not: the kept model's card says the config the run now has."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from brats.io.model_card import ModelCard
from brats.train import job
from brats.train.config import TrainConfig
from brats.volume.labels import DEFAULT


def _run_with_checkpoints(tmp_path: Path, config: TrainConfig, epochs: list[int]) -> None:
    """The run as 20 epochs left it, then 10 more whose best checkpoint stayed epoch 15's."""
    info = config.model_info(
        "zscore",
        label_scheme=DEFAULT,
        manifest_hash="0" * 64,
        metrics={"val_dice_mean": 0.9},
        checkpoint="checkpoint_epoch15",
    )
    card = ModelCard(info=info, version="a" * 64, created="", keras_version="3")
    model = tmp_path / "runs" / "r" / "model"
    model.mkdir(parents=True)
    (model / "model.json").write_bytes(card.to_json())
    for done in epochs:
        folder = tmp_path / "runs" / "r" / f"checkpoint_epoch{done}"
        folder.mkdir()
        history = [{"epoch": i + 1} for i in range(done)]
        (folder / "state.json").write_text(json.dumps({"epochs_done": done, "history": history}))


def test_a_kept_model_is_restamped_with_the_new_config_so_the_next_rerun_is_finished(
    tmp_path: Path,
) -> None:
    twenty = TrainConfig(data="d", storage=str(tmp_path / "runs"), name="r", epochs=20)
    _run_with_checkpoints(tmp_path, twenty, [15, 30])
    thirty = replace(twenty, epochs=30)
    assert job._finished(twenty) is not None and job._finished(thirty) is None  # before

    job._restamp(thirty.run, thirty, "checkpoint_epoch15")  # what train() does on keeping
    card = json.loads((tmp_path / "runs" / "r" / "model" / "model.json").read_text())
    assert card["version"] == "a" * 64  # the same model.keras, the same version
    assert card["training"]["epochs"] == 30
    assert card["training"]["checkpoint"] == "checkpoint_epoch15"
    history, best = job._finished(thirty) or ([], {})
    assert len(history) == 30 and best["val_dice_mean"] == 0.9
