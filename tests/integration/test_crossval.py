"""Cross-validated training on a real local Ray: folds side by side, then their ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brats.devtools.faults import Rendezvous
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.train.config import TrainConfig, TrainingError
from brats.train.job import train
from tests.helpers import TINY_TRAINING as TINY


def _controllers() -> list[object]:
    import ray
    from ray.util.state import list_actors

    return list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "TrainController")],
        limit=1000,
        detail=True,
    )


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cv-cohort")
    generate_cohort(root, 6, SynthConfig(shape=(32, 32, 32), seed=11))
    return root


def test_one_fold_alone_then_the_rest_side_by_side_into_an_ensemble_and_a_rerun_trains_nothing(
    cohort: Path, ray_session: object, tmp_path: Path
) -> None:
    from brats.io.artifact import read_model_card, verify_artifact
    from brats.segment.predictor import Predictor, PredictSettings

    config = TrainConfig(
        data=str(cohort),
        storage=str(tmp_path / "runs"),
        name="cv",
        folds=3,
        epochs=2,
        **{**TINY, "num_workers": 1},
    )
    run = tmp_path / "runs" / "cv"
    alone = train(TrainConfig(**{**config.to_dict(), "fold": 2}))
    assert alone.model is None and not (run / "model").exists()  # no ensemble of one fold
    assert (run / "fold_2" / "model" / "model.json").exists()
    assert not (run / "fold_0").exists() and not (run / "fold_1").exists()
    fold_2 = read_model_card(str(run / "fold_2" / "model"))

    before = {a.actor_id for a in _controllers()}
    # The two folds left wait for each other's first epoch: the run finishes only if both
    # trained at once (the cluster fits both: two 1-CPU workers on 2 CPUs). Fold 2 is done.
    result = train(config, epoch_hook=Rendezvous(str(tmp_path / "met"), parties=2))
    assert len([a for a in _controllers() if a.actor_id not in before]) == 2  # not fold 2's
    assert len(list((tmp_path / "met").iterdir())) == 2
    folds = json.loads((run / "folds.json").read_text())
    assert folds["stratified"] and sorted(c for f in folds["folds"] for c in f) == sorted(
        p.name for p in cohort.iterdir()
    )
    for i in range(3):  # each fold validates on its own cases and trains on the others'
        split = json.loads((run / f"fold_{i}" / "split.json").read_text())
        assert split["val"] == folds["folds"][i]
        assert sorted(split["train"] + split["val"]) == sorted(c for f in folds["folds"] for c in f)

    assert result.model is not None
    card = verify_artifact(result.model)
    assert card.is_ensemble and [f.version for f in card.folds] == [
        read_model_card(str(run / f"fold_{i}" / "model")).version for i in range(3)
    ]
    assert card.folds[2].version == fold_2.version  # trained alone, then kept
    metrics = card.info.metrics
    assert {"val_dice_WT", "val_dice_mean", "oof_dice_ET", "oof_lesion_dice_ET"} <= set(metrics)
    assert metrics["oof_cases"] == 6  # every labelled case, each predicted by the fold that
    assert all(0.0 <= metrics[f"oof_dice_{r}"] <= 1.0 for r in ("WT", "TC", "ET"))  # held it out
    predictor = Predictor.from_artifact(result.model, PredictSettings.with_tta("off"))
    assert predictor.n_models == 3
    assert predictor.labels(np.zeros((4, 16, 16, 16), np.float32)).shape == (16, 16, 16)

    again = train(config)
    assert again.model == result.model and verify_artifact(again.model) == card
    assert len([a for a in _controllers() if a.actor_id not in before]) == 2  # none started
    with pytest.raises(TrainingError, match=r"3 folds of cohort .*, not 2"):
        train(TrainConfig(**{**config.to_dict(), "folds": 2}))
