"""The training worker's log lines: the epoch line, its ETA, and the loggers it quiets."""

from __future__ import annotations

import importlib
import logging

import pytest

from brats.train import logs
from brats.train.logs import EpochLines, epoch_line

METRICS = {"epoch": 3, "loss": 0.41234, "lr": 0.0091234, "samples_per_s": 12.345}
VAL = {"val_dice_WT": 0.912, "val_dice_TC": 0.851, "val_dice_ET": 0.879}


def test_the_epoch_line_has_loss_lr_dice_throughput_and_eta():
    line = epoch_line(METRICS | VAL, 80, eta_s=250.0)
    assert line == (
        "epoch 3/80  loss 0.4123  lr 0.00912  val Dice WT 0.91 TC 0.85 ET 0.88  "
        "12.3 samples/s  ETA 4 min"
    )


def test_the_epoch_line_leaves_out_what_the_epoch_lacks():
    # No validation that epoch, nothing left to do (or no estimate).
    assert epoch_line(METRICS, 3, eta_s=0.0) == "epoch 3/3  loss 0.4123  lr 0.00912  12.3 samples/s"
    assert epoch_line(METRICS | {"lr": 0.0}, 80) == "epoch 3/80  loss 0.4123  lr 0  12.3 samples/s"


def test_the_eta_counts_only_the_epochs_this_group_ran(monkeypatch, caplog):
    clock = iter([100.0, 130.0, 160.0])
    monkeypatch.setattr(logs.time, "perf_counter", lambda: next(clock))
    lines = EpochLines(start=4, epochs=100)  # resumed after epoch 4
    with caplog.at_level(logging.INFO, logger="brats.train"):
        lines.epoch_done(METRICS | {"epoch": 5})  # 30 s for one epoch, 95 left
        lines.epoch_done(METRICS | {"epoch": 6})  # 60 s for two, 94 left
    # Counting the 4 epochs before the resume would give 6 s and 10 s an epoch: 10 and 16 min.
    assert [r.getMessage().rsplit("  ", 1)[-1] for r in caplog.records] == [
        "ETA 48 min",
        "ETA 47 min",
    ]


def test_a_folds_lines_say_which_fold_they_are(caplog):
    with caplog.at_level(logging.INFO, logger="brats.train"):
        EpochLines(start=0, epochs=80, prefix="fold 2: ").epoch_done(METRICS)
    assert caplog.records[-1].getMessage().startswith("fold 2: epoch 3/80  loss 0.4123")


@pytest.fixture
def levels():
    """Put back the levels :func:`quiet_worker_logs` sets (it is meant for a worker)."""
    import tensorflow as tf

    names = [tf.get_logger().name] + [
        importlib.import_module(m).logger.name for m in logs.RAY_TRAIN_PER_EPOCH_LOGGERS
    ]
    before = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def test_a_worker_quiets_ray_trains_per_report_lines_and_tensorflows_info_only(levels, caplog):
    import tensorflow as tf

    from brats.train.logs import quiet_worker_logs

    quiet_worker_logs()
    # The loggers of "Reporting training result" and "Checkpoint successfully created" (a
    # Ray upgrade that moves them fails here, not silently in a user's log).
    loggers = [importlib.import_module(m).logger for m in logs.RAY_TRAIN_PER_EPOCH_LOGGERS]
    for logger in [*loggers, tf.get_logger()]:
        assert not logger.isEnabledFor(logging.INFO)
        assert logger.isEnabledFor(logging.WARNING)
    with caplog.at_level(logging.INFO, logger="brats.train"):
        logs.log.info("epoch 1/2")
    assert [r.getMessage() for r in caplog.records] == ["epoch 1/2"]
