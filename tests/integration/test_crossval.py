"""Cross-validated training on a real local Ray: folds side by side, then their ensemble."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from brats.devtools.synth import SynthConfig, generate_cohort
from brats.train.config import TrainConfig, TrainingError
from brats.train.job import train
from tests.helpers import TINY_TRAINING as TINY
from tests.helpers import every_cpu_held, train_controllers


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cv-cohort")
    generate_cohort(root, 6, SynthConfig(shape=(32, 32, 32), seed=11))
    return root


def test_one_fold_alone_then_the_other_into_an_ensemble_and_a_rerun_trains_nothing(
    cohort: Path, ray_session: object, tmp_path: Path
) -> None:
    from brats.io.artifact import read_model_card, verify_artifact
    from brats.segment.predictor import Predictor, PredictSettings

    config = TrainConfig(
        data=str(cohort),
        storage=str(tmp_path / "runs"),
        name="cv",
        folds=2,
        epochs=2,
        **{**TINY, "num_workers": 1},
    )
    run = tmp_path / "runs" / "cv"
    alone = train(TrainConfig(**{**config.to_dict(), "fold": 1}))
    assert alone.model is None and not (run / "model").exists()  # no ensemble of one fold
    assert (run / "fold_1" / "model" / "model.json").exists() and not (run / "fold_0").exists()
    fold_1 = read_model_card(str(run / "fold_1" / "model"))

    # Both folds at once is the multi-node test's (tests/multinode/test_folds_node_loss.py).
    before = {a.actor_id for a in train_controllers()}
    result = train(config)
    assert len([a for a in train_controllers() if a.actor_id not in before]) == 1  # fold 0's only
    folds = json.loads((run / "folds.json").read_text())
    assert folds["stratified"] and sorted(c for f in folds["folds"] for c in f) == sorted(
        p.name for p in cohort.iterdir()
    )
    for i in range(2):  # each fold validates on its own cases and trains on the other's
        split = json.loads((run / f"fold_{i}" / "split.json").read_text())
        assert split["val"] == folds["folds"][i]
        assert sorted(split["train"] + split["val"]) == sorted(c for f in folds["folds"] for c in f)

    assert result.model is not None
    card = verify_artifact(result.model)
    assert card.is_ensemble and [f.version for f in card.folds] == [
        read_model_card(str(run / f"fold_{i}" / "model")).version for i in range(2)
    ]
    assert card.folds[1].version == fold_1.version  # trained alone, then kept
    assert fold_1.info.training["extra"] == {"fold": 1}  # its epoch lines say "fold 1: ..."
    # The ensemble's card describes the ensemble, not fold 0 (its number, its checkpoint).
    assert card.info.training["folds"] == 2 and card.info.training["name"] == "cv"
    assert card.info.training["extra"] == {} and "checkpoint" not in card.info.training
    metrics = card.info.metrics
    assert {"val_dice_WT", "val_dice_mean", "oof_dice_ET", "oof_lesion_dice_ET"} <= set(metrics)
    assert metrics["oof_cases"] == 6  # every labelled case, each predicted by the fold that
    assert all(0.0 <= metrics[f"oof_dice_{r}"] <= 1.0 for r in ("WT", "TC", "ET"))  # held it out
    predictor = Predictor.from_artifact(result.model, PredictSettings.with_tta("off"))
    assert predictor.n_models == 2
    assert predictor.labels(np.zeros((4, 16, 16, 16), np.float32)).shape == (16, 16, 16)

    again = train(config)
    assert again.model == result.model and verify_artifact(again.model) == card
    assert len([a for a in train_controllers() if a.actor_id not in before]) == 1  # none started
    with every_cpu_held():  # every fold is done: no room is asked for, none is needed
        held = train(TrainConfig(**{**config.to_dict(), "wait_for_actors": 1}))
    assert held.model == result.model
    with pytest.raises(TrainingError, match=r"2 folds of cohort .*, not 3"):
        train(TrainConfig(**{**config.to_dict(), "folds": 3}))


def test_no_room_for_the_workers_stops_training_before_any_run_starts_saying_why(
    cohort: Path, ray_session: object, tmp_path: Path
) -> None:
    from brats.ingest.job import IngestConfig, ingest
    from brats.resources import ActorsNotStarted

    ingested = tmp_path / "cohort"
    ingest(IngestConfig(cohort=str(cohort), out=str(ingested)))
    before = {a.actor_id for a in train_controllers()}
    refused = {}
    with every_cpu_held():
        for folds in (1, 2):
            config = TrainConfig(
                data=str(ingested),
                storage=str(tmp_path / "runs"),
                name=f"busy-{folds}",
                folds=folds,
                epochs=1,
                wait_for_actors=2,
                **{**TINY, "num_workers": 1},
            )
            with pytest.raises(ActorsNotStarted) as error:
                train(config)
            refused[folds] = str(error.value)
    free = "found no room within 2 s: the cluster has 0 of 2 CPUs free"
    assert refused[1].startswith(f"1 training worker(s) of 1 CPUs each {free}")
    assert refused[2].startswith(f"a fold's 1 training worker(s) of 1 CPUs each {free}")
    assert [a for a in train_controllers() if a.actor_id not in before] == []  # no run began
    assert not list((tmp_path / "runs").rglob("checkpoint*"))


def test_queued_folds_wait_for_room_without_a_controller_failure_a_minute() -> None:
    from brats.train.crossval import FOLD_START_TIMEOUT_S, queued_folds_wait_quietly

    name = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    with queued_folds_wait_quietly():  # what Ray Train hands each fold's controller
        assert float(os.environ[name]) == FOLD_START_TIMEOUT_S >= 24 * 3600
    assert name not in os.environ
    os.environ[name] = "90"  # a user's own setting wins
    try:
        with queued_folds_wait_quietly():
            assert os.environ[name] == "90"
        assert os.environ[name] == "90"
    finally:
        del os.environ[name]


def test_every_failed_fold_is_named_whatever_it_raised(ray_session: object, tmp_path: Path) -> None:
    from brats.ingest.shards import MANIFEST_FORMAT
    from brats.storage import resolve
    from brats.train.crossval import train_folds

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    cases = [
        {"case_id": f"c{i}", "labeled": True, "class_voxels": {"NETC": 1, "SNFH": 1, "ET": i % 2}}
        for i in range(6)
    ]
    manifest = {"format": MANIFEST_FORMAT, "hash": "0" * 64, "cases": cases}
    (cohort / "manifest.json").write_text(json.dumps(manifest))
    config = TrainConfig(data=str(cohort), storage=str(tmp_path / "runs"), name="cv", folds=3)

    def train_run(fold: TrainConfig, epoch_hook: object = None) -> None:
        if fold.extra["fold"] == 0:
            raise OSError("storage hiccup while exporting fold 0")
        raise TrainingError(f"fold {fold.extra['fold']} ran out of failures")

    with pytest.raises(TrainingError) as error:
        train_folds(config, prepare=lambda c: resolve(str(cohort)), train_run=train_run)
    assert str(error.value) == (
        "fold 0 failed: OSError: storage hiccup while exporting fold 0; "
        "fold 1 failed: fold 1 ran out of failures; fold 2 failed: fold 2 ran out of failures"
    )
