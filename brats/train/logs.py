"""What a training worker prints: one line per epoch from rank 0, and little else.

A Ray Train worker's log records reach the driver through Ray's log forwarding (prefixed
``(RayTrainWorker pid=...)``). Left alone, every rank adds a ``Reporting training result``
line and rank 0 a ``Checkpoint successfully created`` line per epoch, and TensorFlow logs
each of its ``MultiWorkerMirroredStrategy`` set-up lines twice (its own handler and the root
logger's). :func:`quiet_worker_logs` raises exactly those loggers to ``WARNING`` in the
worker; warnings, errors and a failing worker's traceback still come through.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Final

from brats.progress import duration

log = logging.getLogger("brats.train")
"""The worker's logger: rank 0's run and epoch lines."""

RAY_TRAIN_PER_EPOCH_LOGGERS: Final = (
    "ray.train.v2._internal.execution.context",  # "Reporting training result ..." (every rank)
    "ray.train.v2._internal.execution.storage",  # "Checkpoint successfully created at: ..."
)
"""Ray Train modules whose ``logger`` writes an INFO line per report: the per-epoch noise.

The first one's logger is named after its file, not under ``ray.train``, so Ray Train's
``LoggingConfig(log_level=...)`` does not reach it; each module's own ``logger`` is set
instead. A module that a later Ray moves or renames is skipped (its lines come back; nothing
breaks)."""


def quiet_worker_logs() -> None:
    """In a Ray Train worker, before its first report: Ray Train's per-report INFO lines and
    TensorFlow's INFO lines off (both loggers at ``WARNING``), the ``brats`` logger's INFO
    lines on.

    Ray Train gives the worker's root logger a console handler at INFO; where that is turned
    off (``RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING=0``) the ``brats`` logger gets a stderr
    handler of its own, so the epoch lines are never lost.
    """
    import tensorflow as tf

    tf.get_logger().setLevel(logging.WARNING)
    for name in RAY_TRAIN_PER_EPOCH_LOGGERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        logger = getattr(module, "logger", None)
        if isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)
    brats = logging.getLogger("brats")
    if not logging.getLogger().handlers and not brats.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        brats.addHandler(handler)
        brats.setLevel(logging.INFO)


class EpochLines:
    """Rank 0's epoch lines: :func:`epoch_line` for each finished epoch, with the time left
    estimated from the epochs this worker group has run so far (a resumed run's earlier
    epochs do not count: they ran on another group, perhaps at another size). ``prefix``
    leads every line (``fold 2: `` for a cross-validation fold, whose lines interleave with
    the other folds')."""

    def __init__(self, start: int, epochs: int, prefix: str = "") -> None:
        self._start = start
        self._epochs = epochs
        self._prefix = prefix
        self._began = time.perf_counter()

    def epoch_done(self, metrics: Mapping[str, Any]) -> None:
        """Log the line of the epoch ``metrics["epoch"]`` (1-based) just finished."""
        done = int(metrics["epoch"])
        per_epoch = (time.perf_counter() - self._began) / max(1, done - self._start)
        eta_s = per_epoch * (self._epochs - done)
        log.info("%s%s", self._prefix, epoch_line(metrics, self._epochs, eta_s=eta_s))


_FIRST = {"WT": 0, "TC": 1, "ET": 2}
"""The glioma regions lead the validation Dice, in their order; a scheme's others follow."""


def epoch_line(metrics: Mapping[str, Any], epochs: int, *, eta_s: float | None = None) -> str:
    """``epoch 3/80  loss 0.412  lr 0.0091  val Dice WT 0.91 TC 0.85 ET 0.88  12.3 samples/s
    ETA 4 min``: the validation Dice where the epoch has it, the ETA where epochs are left
    (``eta_s`` given and above 0, written as the jobs' progress lines write time left)."""
    parts = [
        f"epoch {metrics['epoch']}/{epochs}",
        f"loss {metrics['loss']:.4g}",
        f"lr {metrics['lr']:.3g}",
    ]
    regions = [k.removeprefix("val_dice_") for k in metrics if k.startswith("val_dice_")]
    regions = sorted(set(regions) - {"mean"}, key=lambda r: (_FIRST.get(r, len(_FIRST)), r))
    dices = [f"{r} {metrics[f'val_dice_{r}']:.2f}" for r in regions]
    if dices:
        parts.append("val Dice " + " ".join(dices))
    parts.append(f"{metrics['samples_per_s']:.1f} samples/s")
    if eta_s is not None and eta_s > 0:
        parts.append(f"ETA {duration(eta_s)}")
    return "  ".join(parts)
