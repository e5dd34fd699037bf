"""The learning rate as a function of how far the run is: a linear warm-up, then the decay.

The rate depends on the fraction of the run's epochs done, not on the optimizer's step count,
because an elastic run changes its steps per epoch when its worker group is resized (an epoch
is the same number of patches at any size): a run that lost a worker takes twice the steps
per epoch, each at the rate of its point in the run, and ends where a run of fixed size would.
"""

from __future__ import annotations

import math
from typing import Any

from brats.train.config import TrainConfig


def learning_rate_at(config: TrainConfig, progress: Any) -> Any:
    """The learning rate at ``progress`` (the fraction of all epochs done, in ``[0, 1]``; a
    float or a tensor): linear from 0 to ``config.learning_rate`` over the first
    ``warmup_fraction``, then ``config.lr_schedule`` over the rest (``poly``: ``(1 - t)**0.9``
    to 0, ``cosine`` to 0, or ``constant``).

    Without the warm-up, Adam's first full-size steps can push a freshly initialized U-Net
    into predicting background everywhere, from which it does not recover.
    """
    from keras import ops

    t = ops.clip(ops.cast(progress, "float32"), 0.0, 1.0)
    peak = config.learning_rate
    warmup = config.warmup_fraction
    after = ops.clip((t - warmup) / (1.0 - warmup), 0.0, 1.0)
    if config.lr_schedule == "constant":
        decayed = peak * ops.ones_like(after)
    elif config.lr_schedule == "cosine":
        decayed = peak * 0.5 * (1.0 + ops.cos(math.pi * after))
    else:
        decayed = peak * ops.power(1.0 - after, 0.9)
    if warmup <= 0.0:
        return decayed
    return ops.where(t < warmup, peak * t / warmup, decayed)


def step_progress(epoch: int, step: int, steps: int, epochs: int) -> float:
    """The progress at which step ``step`` (from 0) of ``steps`` in epoch ``epoch`` (from 0)
    of ``epochs`` runs: the middle of the step, so the first step's rate is above 0 and the
    last one's too."""
    return (epoch + (step + 0.5) / steps) / epochs
