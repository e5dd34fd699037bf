"""The learning rate per step: a linear warm-up, then the configured decay."""

from __future__ import annotations

from typing import Any

from brats.train.config import TrainConfig


def learning_rate_schedule(config: TrainConfig, total_steps: int) -> Any:
    """A Keras ``LearningRateSchedule``: linear from ~0 to ``config.learning_rate`` over the
    first ``warmup_fraction`` of ``total_steps``, then ``config.lr_schedule`` (``poly``:
    ``(1 - t)**0.9`` to 0, ``cosine``, or ``constant``) over the rest.

    Without the warm-up, Adam's first full-size steps can push a freshly initialized U-Net
    into predicting background everywhere, from which it does not recover.
    """
    import keras
    from keras import ops

    warmup = int(total_steps * config.warmup_fraction)
    rest = max(total_steps - warmup, 1)
    decay: Any
    if config.lr_schedule == "constant":
        decay = None
    elif config.lr_schedule == "cosine":
        decay = keras.optimizers.schedules.CosineDecay(config.learning_rate, rest)
    else:
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, rest, end_learning_rate=0.0, power=0.9
        )
    peak = config.learning_rate

    class WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step: Any) -> Any:
            step = ops.cast(step, "float32")
            after = peak if decay is None else decay(ops.maximum(step - warmup, 0.0))
            ramp = peak * (step + 1.0) / float(max(warmup, 1))
            return ops.where(step < warmup, ramp, after)

    return WarmupThenDecay()
