"""Training on a cluster that loses a node and gains one: ``--num-workers 1:2``.

Two worker nodes of 3 CPUs, one training worker (2 CPUs) on each, a CPU left on each for
reading data. :class:`~brats.devtools.faults.GroupLog` records where every epoch starts and
holds two of them:

1. epoch 2 (0-based 1), on the 2-worker group: rank 1's node is removed, taking the worker,
   its actor and its objects. Ray Train restarts the group with the one worker that fits,
   from the newest complete checkpoint (after epoch 1), which trains epoch 2 on its own;
2. epoch 3, on the 1-worker group: a node joins. At the next resize check the group is
   restarted with 2 workers, from the checkpoint after epoch 2, and finishes.

Every epoch is in the history once, each with the size of the group that trained it and
the steps that size takes for the same patches an epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brats.devtools.faults import GroupLog
from brats.devtools.synth import SynthConfig, generate_cohort
from brats.train.batches import steps_per_epoch
from brats.train.config import TrainConfig
from brats.train.job import train
from tests.helpers import TINY_TRAINING
from tests.multinode.conftest import in_background, wait_for

EPOCHS = 4


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("elastic-cohort")
    generate_cohort(root, 8, SynthConfig(shape=(32, 32, 24), seed=6))
    return root


def starts(markers: Path) -> list[tuple[int, int, int, str]]:
    """``(epoch, rank, world size, node id)`` of every epoch start GroupLog recorded."""
    out = []
    for path in markers.iterdir():
        parts = path.name.split(".")
        if len(parts) == 4:
            out.append((int(parts[0]), int(parts[1]), int(parts[2]), parts[3]))
    return sorted(out)


def test_training_goes_on_after_a_node_is_lost_and_grows_back_when_one_joins(
    workers, cohort, tmp_path, monkeypatch
):
    # After the loss Ray Train first tries the old size, until this timeout (60 s by default:
    # the lost node's resources still look reserved for a while), then starts what fits.
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    nodes = [workers.add(num_cpus=3), workers.add(num_cpus=3)]
    markers = tmp_path / "markers"
    markers.mkdir()
    hook = GroupLog(str(markers), holds=((1, 1, 2), (2, 0, 1)), timeout_s=240)
    config = TrainConfig(
        data=str(cohort),
        storage=str(tmp_path / "runs"),
        name="elastic",
        epochs=EPOCHS,
        cpus_per_worker=2,
        max_failures=2,
        resize_interval_s=1,
        **{**TINY_TRAINING, "num_workers": "1:2"},
    )
    with in_background(lambda: train(config, epoch_hook=hook), markers / "release") as job:
        held = wait_for(
            lambda: [s for s in starts(markers) if s[:3] == (1, 1, 2)], 300, "epoch 2's hold", job
        )
        lost = held[0][3]
        assert lost in nodes
        workers.remove(lost)  # rank 1's worker dies with its node, mid-epoch for rank 0
        wait_for(
            lambda: [s for s in starts(markers) if s[:3] == (2, 0, 1)], 300, "epoch 3 on 1", job
        )
        workers.add(num_cpus=3)  # the group is held in epoch 3 until it is resized
        result = job.result(timeout_s=400)

    history = result.history
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert [row["workers"] for row in history] == [2, 1, 2, 2]
    n_train = 6  # 8 cases, a quarter held out
    at = {size: steps_per_epoch(config, n_train, size) for size in (1, 2)}
    assert [row["steps"] for row in history] == [at[2], at[1], at[2], at[2]]
    assert at[1] * 1 == at[2] * 2  # the same patches an epoch at either size

    by_world = {}
    for epoch, rank, world, _ in starts(markers):
        by_world.setdefault(world, []).append((epoch, rank))
    # Epoch 2 began on 2 workers (lost), again on 1 (from the epoch-1 checkpoint), epoch 3
    # on 1 (held, resized away) and again on 2 (from the epoch-2 checkpoint).
    assert sorted(by_world[1]) == [(1, 0), (2, 0)]
    assert sorted(by_world[2]) == [(e, r) for e in (0, 1, 2, 3) for r in (0, 1)]
    assert (tmp_path / "runs" / "elastic" / "model" / "model.json").is_file()
