"""Cross-validation on a cluster that loses a node: two folds train at once, one on each of
two worker nodes (each fold's worker takes a whole node's 2 CPUs), both are held at the
start of their second epoch, and one node is removed with its fold's worker. Released, the
other fold finishes; the lost fold's run restarts from its newest checkpoint on the node the
first one freed, and finishes too. Then the ensemble of both is written."""

from __future__ import annotations

import json

from brats.devtools.faults import GroupLog
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.train.config import TrainConfig
from brats.train.job import train
from tests.helpers import TINY_TRAINING
from tests.multinode.conftest import in_background, wait_for

EPOCHS = 2


def test_two_folds_on_two_nodes_both_finish_when_one_node_is_lost(workers, tmp_path, monkeypatch):
    from brats.io.artifact import verify_artifact

    # The lost fold's restart waits for a node; each try gives up after this, and retries.
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    nodes = [workers.add(), workers.add()]
    cohort = tmp_path / "cohort"
    generate_cohort(cohort, 6, SynthConfig(shape=(32, 32, 24), seed=6))
    markers = tmp_path / "markers"
    markers.mkdir()
    hook = GroupLog(str(markers), holds=((1, 0, 1),), timeout_s=240)
    config = TrainConfig(
        data=str(cohort),
        storage=str(tmp_path / "runs"),
        name="cv",
        folds=2,
        epochs=EPOCHS,
        cpus_per_worker=2,
        max_failures=2,
        **{**TINY_TRAINING, "num_workers": 1},
    )

    def held() -> list[str]:
        return sorted(p.name.split(".")[3] for p in markers.glob("1.0.1.*"))

    with in_background(lambda: train(config, epoch_hook=hook), markers / "release") as job:
        where = wait_for(lambda: len(held()) == 2 and held(), 300, "both folds in epoch 2", job)
        assert where == sorted(nodes)  # one fold on each node, at the same time
        workers.remove(nodes[0])
        (markers / "release").write_text("go\n")
        result = job.result(timeout_s=400)

    run = tmp_path / "runs" / "cv"
    for i in range(2):
        history = [r for r in result.history if r["fold"] == i]
        assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1)), i
        assert (run / f"fold_{i}" / "model" / "model.json").is_file()
    card = verify_artifact(result.model)
    assert card.is_ensemble and len(card.folds) == 2
    assert card.info.metrics["oof_cases"] == 6
    folds = json.loads((run / "folds.json").read_text())
    assert sorted(c for f in folds["folds"] for c in f) == sorted(p.name for p in cohort.iterdir())
